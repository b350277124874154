"""On the device itself: a board install without torch, `profile`, `validate` and `bench` over a
real OpenSSH server (127.0.0.1, keys made for the test) against a real board venv, and verdicts
only from measurements on the device.

The board venv (tests/board.py) holds lkca-edge with only the runtime extras; the sshd gives its
remote commands that venv first on PATH. `.ci/run` installs Debian's openssh-server and -client.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lkca_edge.errors import UserError
from tests.board import board_venv, build_wheel, free_port, sshd_missing, start_sshd

REPO = Path(__file__).resolve().parents[1]
RUNS = ["--runs", "8", "--warmup", "1", "--op-runs", "0"]


def cli(*args, env=None, timeout=600):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "lkca_edge", *args], capture_output=True,
                          text=True, env=full_env, cwd=REPO, timeout=timeout)


# -- parsing and rules (no server) ------------------------------------------------------------------
def test_remote_urls_parse_or_are_refused_in_one_line():
    from lkca_edge.profiles.remote import AdbTarget, SshTarget, parse_remote

    t = parse_remote("ssh://pi@raspberrypi.local:2222")
    assert isinstance(t, SshTarget) and (t.user, t.host, t.port) == ("pi", "raspberrypi.local", 2222)
    assert t.destination == "pi@raspberrypi.local"
    assert parse_remote("ssh://board").user is None and parse_remote("ssh://board").port is None
    assert parse_remote("ssh://me@[::1]:22").host == "::1"
    assert parse_remote("adb://R58M12ABC") == AdbTarget("adb://R58M12ABC", "R58M12ABC")
    assert parse_remote("adb://").serial is None
    assert parse_remote("local") is None and parse_remote(None) is None
    for bad, words in (("pi@board", "expected ssh://"), ("ftp://board", "unknown scheme"),
                       ("ssh://", "no host"), ("ssh://pi@board/home/pi", "not a path"),
                       ("ssh://pi:secret@board", "no passwords"), ("ssh://board:99999", "Port"),
                       ("ssh://-oProxyCommand=touch@x", "valid"), ("ssh://a;rm@board", "valid")):
        with pytest.raises(UserError) as err:
            parse_remote(bad)
        assert words.lower() in str(err.value).lower() and "\n" not in str(err.value), bad


def test_ssh_command_line_takes_the_users_config_and_options(monkeypatch, tmp_path):
    from lkca_edge.profiles.remote import SSH_CONFIG_ENV, SSH_OPTIONS_ENV, parse_remote, ssh_argv

    if sshd_missing() and "client" in (sshd_missing() or ""):
        pytest.skip(sshd_missing())
    config = tmp_path / "config"
    config.write_text("Host *\n")
    monkeypatch.setenv(SSH_CONFIG_ENV, str(config))
    monkeypatch.setenv(SSH_OPTIONS_ENV, "ConnectionAttempts=2\n")
    argv = ssh_argv(parse_remote("ssh://pi@board:2022"), "true", ["Compression=no"])
    assert argv[argv.index("-F") + 1] == str(config) and "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2022"
    assert "ConnectionAttempts=2" in argv and "Compression=no" in argv
    assert argv[-3:] == ["--", "pi@board", "true"]  # no host can be read as an option
    monkeypatch.setenv(SSH_CONFIG_ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such ssh config"):
        ssh_argv(parse_remote("ssh://board"), "true")


def test_device_profiles_may_carry_their_remote(tmp_path):
    import yaml

    from lkca_edge.profiles.devices import BUILTIN_DIR, get_profile, load_profile_file

    data = yaml.safe_load((BUILTIN_DIR / "raspberry-pi-4.yaml").read_text())
    data.update(name="my-pi", remote="ssh://pi@my-pi.local", remote_command="/home/pi/v/bin/lkca-edge")
    (tmp_path / "my-pi.yaml").write_text(yaml.safe_dump(data))
    p = get_profile("my-pi", tmp_path)
    assert p.remote == "ssh://pi@my-pi.local" and p.remote_command == "/home/pi/v/bin/lkca-edge"
    for change, words in (({"remote": "pi@my-pi"}, "field 'remote'"),
                          ({"remote": None, "remote_command": "x"}, "only applies with a remote")):
        bad = {k: v for k, v in {**data, **change}.items() if v is not None}
        (tmp_path / "my-pi.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(UserError, match=words):
            load_profile_file(tmp_path / "my-pi.yaml")


def test_a_verdict_for_another_device_is_null_with_the_reason():
    from lkca_edge.budgets import make_verdict, not_on_device_reason
    from types import SimpleNamespace

    from lkca_edge.profiles.devices import get_profile

    manifest = SimpleNamespace(validation={}, backend="onnx", precision="int8")
    pi = get_profile("raspberry-pi-4")
    reason = not_on_device_reason("x86_64", pi.name)
    assert reason == "measured on host x86_64, not on raspberry-pi-4"
    assert not_on_device_reason("x86_64", "host") is None
    fast = {"p90": 1.0, "mean": 1.0}
    v = make_verdict(pi, manifest, fast, 10.0, "measured on this host", reason)
    assert v["latency_ok"] is None and v["memory_ok"] is None and v["on_device"] is False
    assert v["not_on_device"] == reason and reason in v["note"]
    v = make_verdict(pi, manifest, fast, 10.0, "measured on ssh://pi@board (aarch64, Cortex-A72)")
    assert v["latency_ok"] is True and v["memory_ok"] is True and v["on_device"] is True


def test_an_unreachable_board_is_one_line():
    from lkca_edge.profiles.remote import parse_remote, run_on_board

    if sshd_missing() and "client" in (sshd_missing() or ""):
        pytest.skip(sshd_missing())
    with tempfile.NamedTemporaryFile() as f:
        target = parse_remote(f"ssh://nobody@127.0.0.1:{free_port()}")  # nothing listens there
        with pytest.raises(UserError) as err:
            run_on_board(target, None, ["devices"], [(Path(f.name), "x")], timeout=60)
    msg = str(err.value)
    assert msg.startswith(f"cannot reach {target.url}: ") and "refused" in msg and "\n" not in msg


def test_validate_refuses_adb_and_stray_remote_options():
    from lkca_edge.pipelines.validate import validate_artifact

    with pytest.raises(UserError, match="print no logits"):
        validate_artifact("x.tflite", remote="adb://")
    with pytest.raises(UserError, match="--remote-command"):
        validate_artifact("x.tflite", remote_command="/usr/bin/lkca-edge")


# -- a real board over a real sshd ------------------------------------------------------------------
@pytest.fixture(scope="session")
def board(tmp_path_factory):
    """(sshd, board venv): one server and one torch-free board for the session."""
    why = sshd_missing()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("board")
    venv = board_venv(build_wheel(work / "wheel"))
    server = start_sshd(work / "sshd", [str(venv.path / "bin")])
    print(f"\nboard venv: {venv.size_mb:.0f} MB, third-party packages "
          + ("from the cache" if venv.built_s is None else f"installed in {venv.built_s:.0f} s")
          + f", lkca-edge installed in {venv.lkca_edge_s:.1f} s")
    yield server, venv
    server.stop()


@pytest.fixture
def ssh_env(board):
    return {"LKCA_EDGE_SSH_CONFIG": str(board[0].client_config)}


def board_dirs() -> set[str]:
    """The temporary directories remote runs make on the board (this machine)."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "lkca-edge.*")))


@pytest.mark.slow
def test_the_board_install_has_no_torch_and_its_commands_work(board, exported, tmp_path):
    """`pip install 'lkca-edge[runtime-litert,runtime-onnx]'` from a wheel: no torch, no
    scikit-learn; devices, validate (on the validation pack), profile and classify work there."""
    from tests.conftest import copy_artifact

    _, venv = board
    for module in ("torch", "sklearn", "scipy"):
        r = subprocess.run([str(venv.python), "-c", f"import {module}"], capture_output=True, text=True)
        assert r.returncode != 0 and "No module named" in r.stderr, module
    artifact = copy_artifact(exported("tflite", "fp32").artifact, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def board_cli(*args):
        return subprocess.run([str(venv.lkca_edge), *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)

    r = board_cli("devices")
    assert r.returncode == 0 and "raspberry-pi-4" in r.stdout, r.stderr
    r = board_cli("validate", artifact.name, "--json", "--limit", "100")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["runnable"] and v["passed"] is True and v["n_images"] == 100
    r = board_cli("profile", artifact.name, "--json", *RUNS)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["mode"] == "measured" and "torch" not in p["details"]["modules_in_child"]
    from PIL import Image

    Image.fromarray(__import__("numpy").full((32, 32, 3), 128, "uint8")).save(tmp_path / "grey.png")
    r = board_cli("classify", "--artifact", artifact.name, "grey.png", "--json")
    assert r.returncode == 0, r.stderr
    # data sets that need scikit-learn say so in one line
    r = board_cli("profile", artifact.name, "--dataset", "digits", *RUNS)
    assert r.returncode == 2 and "lkca-edge[data]" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_remote_profile_of_every_runnable_backend(board, exported, ssh_env):
    server, venv = board
    before = board_dirs()
    for backend, precision in (("tflite", "fp32"), ("onnx", "int8")):
        artifact = exported(backend, precision).artifact
        r = cli("profile", str(artifact), "--device", "raspberry-pi-4", "--remote", server.url,
                "--remote-command", str(venv.lkca_edge), "--json", *RUNS, env=ssh_env)
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout)
        assert p["mode"] == "ssh" and p["backend"] == backend and p["artifact"] == str(artifact)
        v = p["verdict"]
        assert v["on_device"] is True and v["not_on_device"] is None
        assert v["latency_ok"] in (True, False) and v["memory_ok"] in (True, False)
        assert v["measured_on"].startswith(f"measured on {server.url} ({os.uname().machine}, ")
        assert p["host"]["remote"] == server.url and p["host"]["uname_m"] == os.uname().machine
        assert p["host"]["emulated_threads"] is False and p["runs"] == 8
        assert p["details"]["board_artifact"] == f"{p['details']['board_workdir']}/{artifact.name}"
        assert "torch" not in p["details"]["modules_in_child"]  # measured by the torch-free board
        assert p["latency_ms"]["median"] > 0 and p["details"]["sanity_top1"] > 0.8
    assert board_dirs() == before  # what was copied is removed


@pytest.mark.slow
def test_executorch_memory_on_a_board_with_torch(board, exported, ssh_env):
    """The torch-free board says in one line that it cannot run a .pte; a board whose lkca-edge
    has the executorch runtime (this test's own venv) reports its memory as labelled fields and
    holds against the budget what the device would hold, not libtorch."""
    server, venv = board
    artifact = exported("executorch", "fp32").artifact
    r = cli("profile", str(artifact), "--device", "raspberry-pi-4", "--remote", server.url,
            "--remote-command", str(venv.lkca_edge), *RUNS, env=ssh_env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"executorch cannot run on {server.url}: the executorch runtime is not installed" in r.stderr
    assert "lkca-edge[runtime-executorch]" in r.stderr

    ours = Path(sys.executable).parent / "lkca-edge"
    r = cli("profile", str(artifact), "--device", "raspberry-pi-4", "--remote", server.url,
            "--remote-command", str(ours), "--json", *RUNS, env=ssh_env)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    m = p["memory"]
    facts = json.loads(Path(f"{artifact}.manifest.json").read_text())
    assert m["activation_arena_bytes"] > 0 and m["constant_bytes"] > 0.8 * facts["params"] * 4
    assert m["runtime_rss_mb"] == p["peak_rss_mb"] > 200      # libtorch is in the process
    assert m["device_memory_mb"] < 100 and "libtorch" in m["basis"]
    assert m["device_memory_mb"] >= (m["activation_arena_bytes"] + m["constant_bytes"]) / 2**20
    assert set(m["labels"]) >= {"activation_arena_bytes", "constant_bytes", "runtime_rss_mb",
                                "device_memory_mb"}
    assert p["verdict"]["memory_ok"] is (m["device_memory_mb"] <= 256)


@pytest.mark.slow
def test_remote_validate_recomputes_the_gate_on_the_board(board, exported, ssh_env):
    server, _ = board
    artifact = exported("onnx", "int8").artifact
    r = cli("validate", str(artifact), "--remote", server.url, "--json", "--limit", "120",
            env=ssh_env)  # the board's lkca-edge from its PATH
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["runnable"] and v["passed"] is True and v["n_images"] == 120
    assert f"run on {server.url} (" in v["note"]


@pytest.mark.slow
def test_remote_failures_are_one_line_each(board, exported, ssh_env):
    server, _ = board
    artifact = str(exported("onnx", "int8").artifact)
    before = board_dirs()
    cases = [
        (["--remote", f"ssh://{server.user}@127.0.0.1:{free_port()}"], "cannot reach ssh://"),
        (["--remote", server.url, "--remote-command", "/nonexistent/lkca-edge"],
         f"no lkca-edge on {server.url}"),
        (["--remote", f"ssh://lkca-nobody@127.0.0.1:{server.port}"], "cannot log in"),
        (["--remote", server.url, "--dataset", "digits"], "drop --dataset"),
    ]
    for extra, words in cases:
        r = cli("profile", artifact, *extra, *RUNS, env=ssh_env)
        assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, (extra, r.stderr)
    r = cli("validate", artifact, "--remote", server.url, "--remote-command", "/nonexistent/x",
            env=ssh_env)
    assert r.returncode == 2 and f"no lkca-edge on {server.url}" in r.stderr
    assert board_dirs() == before


@pytest.mark.slow
def test_bench_measures_every_cell_on_the_board(board, tmp_path, ssh_env):
    """A device profile that carries its remote: bench exports here and profiles there; only
    that device gets latency/memory verdicts, every other profile says "not measured on the
    device"."""
    import yaml

    from lkca_edge.profiles.devices import BUILTIN_DIR

    server, venv = board
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = yaml.safe_load((BUILTIN_DIR / "raspberry-pi-4.yaml").read_text())
    data.update(name="test-board", description="this machine reached over ssh, as a board",
                remote=server.url, latency_budget_ms=1000.0, ram_budget_mb=2048.0)
    (profiles / "test-board.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    r = cli("bench", "--backends", "onnx", "--precisions", "fp32", "--device", "test-board",
            "--profiles-dir", str(profiles), "--runs", "5", "--warmup", "1", "--op-runs", "0",
            "--limit", "60", "--no-history", "--no-progress", "--out", str(out), env=ssh_env,
            timeout=900)
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["remote"] == server.url
    (cell,) = results["cells"]
    assert cell["status"] == "ok" and cell["mode"] == "ssh", cell.get("error")
    assert cell["profile"]["verdict"]["on_device"] is True
    assert cell["metrics"]["device_memory_mb"] is not None
    ship = {e["device"]: e for e in results["ship"]}
    assert ship["test-board"]["cell"] == ["lkca-1m", "onnx", "fp32"]
    assert server.url in ship["test-board"]["measured_on"]
    pi = ship["raspberry-pi-4"]
    assert pi["cell"] is None and pi["rejected"][0]["why"].startswith("not measured on the device")
    report = (out / "report.md").read_text()
    assert "not measured on the device" in report
