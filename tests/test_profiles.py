"""Device profiles, `lkca-edge devices`, `lkca-edge profile` and the profilers.

Real artifacts: lkca-1m (shipped digits weights) exported to ONNX fp32 and int8 once per session,
profiled in a child process with few runs. Nothing here fakes a measurement.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lkca_edge.errors import UserError

REPO = Path(__file__).resolve().parent.parent
RUNS = 20


def cli(*args, env=None, timeout=300):
    """Run `python -m lkca_edge ARGS` as a user would; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "lkca_edge", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)


@pytest.fixture
def onnx_artifacts(exported):
    """lkca-1m exported to ONNX fp32 and int8 (the session cache)."""
    return {precision: exported("onnx", precision).artifact for precision in ("fp32", "int8")}


# -- device profiles ------------------------------------------------------------------------------
def test_builtin_profiles_parse():
    from lkca_edge.profiles.devices import load_profiles

    profiles = load_profiles()
    assert {"pixel-8", "iphone-15", "raspberry-pi-5", "raspberry-pi-4", "android-low-end",
            "host"} <= set(profiles)
    for p in profiles.values():
        assert p.builtin and Path(p.path).name == f"{p.name}.yaml"
        for key in ("cpu", "threads", "ram_budget_mb", "latency_budget_ms", "accuracy_gate"):
            assert p.sources[key].strip(), (p.name, key)
        if "coreml" in p.backends:
            assert p.os in ("ios", "macos")
    assert profiles["iphone-15"].backends == ("coreml",)
    assert profiles["iphone-15"].coreml_compute_units == "ALL"
    assert profiles["raspberry-pi-4"].threads == 4
    assert profiles["android-low-end"].threads == 4 and "A53" in profiles["android-low-end"].cpu
    assert profiles["host"].threads == "all" and profiles["host"].resolve_threads(3) == 3
    # hardware facts cite vendor pages; budgets say they are product choices
    assert "raspberrypi.com" in profiles["raspberry-pi-4"].sources["cpu"]
    assert "apple.com" in profiles["iphone-15"].sources["cpu"]
    assert profiles["pixel-8"].sources["ram_budget_mb"].startswith("product choice")


GOOD = textwrap.dedent("""\
    name: {name}
    description: a test board
    os: linux
    cpu: 4x Cortex-A55
    threads: 4
    ram_budget_mb: 128
    latency_budget_ms: 40
    accuracy_gate: 1.0
    backends: [tflite, onnx]
    precisions: [int8]
    sources:
      cpu: vendor page
      threads: one per core
      ram_budget_mb: product choice
      latency_budget_ms: product choice
      accuracy_gate: product choice
    """)


def test_unknown_key_rejected_with_file_and_field(tmp_path):
    from lkca_edge.profiles.devices import load_profile_file

    f = tmp_path / "my-board.yaml"
    f.write_text(GOOD.format(name="my-board") + "latency_budget: 12\n")
    with pytest.raises(UserError) as err:
        load_profile_file(f)
    msg = str(err.value)
    assert str(f) in msg and "'latency_budget'" in msg and "latency_budget_ms" in msg

    bad = GOOD.format(name="my-board").replace("threads: 4", "threads: four")
    f.write_text(bad)
    with pytest.raises(UserError, match=r"my-board\.yaml: field 'threads'"):
        load_profile_file(f)
    f.write_text(GOOD.format(name="my-board").replace("backends: [tflite, onnx]", "backends: [coreml]"))
    with pytest.raises(UserError, match="coreml runs only on Apple"):
        load_profile_file(f)
    f.write_text(GOOD.format(name="my-board").replace("  accuracy_gate: product choice\n", ""))
    # built-in profiles cite a source for every number; a user's own profile need not
    with pytest.raises(UserError, match=r"field 'sources': needs a note or URL for accuracy_gate"):
        load_profile_file(f, builtin=True)
    assert load_profile_file(f).sources.get("accuracy_gate") is None


def test_user_profiles_from_env_and_cli(tmp_path, monkeypatch):
    from lkca_edge.profiles.devices import get_profile, load_profiles

    (tmp_path / "jetson-like.yaml").write_text(GOOD.format(name="jetson-like"))
    monkeypatch.setenv("LKCA_EDGE_PROFILES", str(tmp_path))
    profiles = load_profiles()
    assert profiles["jetson-like"].ram_budget_mb == 128 and not profiles["jetson-like"].builtin
    assert "pixel-8" in profiles
    with pytest.raises(UserError, match="did you mean: jetson-like"):
        get_profile("jetson-lik")
    monkeypatch.setenv("LKCA_EDGE_PROFILES", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not found.*LKCA_EDGE_PROFILES"):
        load_profiles()

    monkeypatch.delenv("LKCA_EDGE_PROFILES")
    r = cli("devices", "--json", env={"LKCA_EDGE_PROFILES": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    names = [d["name"] for d in json.loads(r.stdout)]
    assert "jetson-like" in names and "host" in names
    r = cli("devices", "--profiles-dir", str(tmp_path))
    assert r.returncode == 0 and "jetson-like" in r.stdout and "raspberry-pi-4" in r.stdout


# -- profiling real ONNX artifacts ----------------------------------------------------------------
def _check_schema(d: dict, runs: int) -> None:
    for key in ("backend", "precision", "device", "threads", "runs", "latency_ms", "load_ms",
                "first_inference_ms", "peak_rss_mb", "rss_growth_mb", "planned_memory_bytes",
                "size_bytes", "ops", "verdict", "host", "versions"):
        assert key in d, key
    lat = d["latency_ms"]
    assert set(lat) >= {"min", "median", "p90", "p99", "mean", "std"}
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] <= lat["max"] - lat["min"]
    assert d["runs"] == runs
    assert d["load_ms"] > 0 and d["first_inference_ms"] > 0 and d["throughput_ips"] > 0
    assert d["peak_rss_mb"] > 0 and d["rss_growth_mb"] is not None
    assert {"memory_ok", "latency_ok"} <= set(d["verdict"])
    assert "measured on this host" in d["verdict"]["measured_on"]
    assert {"cpu", "cores", "os"} <= set(d["host"])
    assert d["versions"].get("onnxruntime")
    assert d["ops"] and all({"op", "ms", "count", "delegated"} <= set(o) for o in d["ops"])
    assert d["details"]["torch_in_child"] is False       # runtime-only path: no torch in the child
    assert "torch" not in d["details"]["modules_in_child"]
    assert d["details"]["n_images"] > 1 and "validation pack" in d["details"]["inputs"]


@pytest.mark.slow
def test_profile_json_onnx_fp32_and_int8(onnx_artifacts):
    r = cli("profile", str(onnx_artifacts["fp32"]), "--json", "--runs", str(RUNS), "--warmup", "3",
            "--op-runs", "3", "--threads", "1")
    assert r.returncode == 0, r.stderr
    fp32 = json.loads(r.stdout)
    _check_schema(fp32, RUNS)
    assert fp32["backend"] == "onnx" and fp32["precision"] == "fp32" and fp32["device"] == "host"
    assert fp32["threads"] == 1 and fp32["details"]["cpus"] == fp32["details"]["cpus"][:1]
    assert fp32["host"]["emulated_threads"] is False
    assert fp32["size_bytes"] == Path(onnx_artifacts["fp32"]).stat().st_size
    assert fp32["param_bytes"] == fp32["params"] * 4
    assert fp32["details"]["sanity_top1"] > 0.8            # real digits, the real model

    r = cli("profile", str(onnx_artifacts["int8"]), "--json", "--runs", str(RUNS), "--warmup", "3",
            "--op-runs", "3", "--device", "raspberry-pi-4")
    assert r.returncode == 0, r.stderr
    int8 = json.loads(r.stdout)
    _check_schema(int8, RUNS)
    assert int8["precision"] == "int8" and int8["device"] == "raspberry-pi-4"
    cores = len(os.sched_getaffinity(0))
    assert int8["threads"] == min(4, cores) and len(int8["details"]["cpus"]) == int8["threads"]
    assert int8["host"]["emulated_threads"] is True
    assert "host-emulated" in int8["host"]["thread_note"]
    assert "not on a raspberry-pi-4" in int8["verdict"]["measured_on"]
    # a host run is no measurement of the board: no latency/memory verdict, and why
    assert int8["verdict"]["latency_ok"] is None and int8["verdict"]["memory_ok"] is None
    assert int8["verdict"]["on_device"] is False
    assert int8["verdict"]["not_on_device"] == (f"measured on host {platform.machine()}, "
                                                f"not on raspberry-pi-4")
    assert int8["verdict"]["accuracy_ok"] is True  # accuracy is the device-independent gate
    assert int8["memory"]["device_memory_mb"] == int8["peak_rss_mb"]  # no libtorch in ORT
    assert int8["verdict"]["budgets"]["latency_ms"] == 33
    assert int8["size_bytes"] < fp32["size_bytes"] / 2
    assert int8["param_bytes"] == int8["params"]
    # quantized kernels ran (the default ONNX int8 recipe is dynamic: DynamicQuantizeMatMul)
    assert any(o["type"].startswith(("Q", "DynamicQuantize")) for o in int8["ops"])


@pytest.mark.slow
def test_profile_api_and_text_output(onnx_artifacts):
    from lkca_edge.pipelines.profile import profile_artifact
    from lkca_edge.profiles import ProfileResult

    res = profile_artifact(onnx_artifacts["int8"], runs=5, warmup=1, threads=1, op_runs=0)
    assert isinstance(res, ProfileResult)
    assert res.runs == 5 and res.latency_ms.median > 0 and res.ops == []
    budget = res.verdict["budgets"]["ram_mb"]
    assert res.mode == "measured" and res.verdict["memory_ok"] is (res.peak_rss_mb <= budget)

    r = cli("profile", str(onnx_artifacts["int8"]), "--runs", "5", "--warmup", "1", "--op-runs", "0")
    assert r.returncode == 0, r.stderr
    assert "latency ms: median" in r.stdout and "peak RSS" in r.stdout and "verdict for host" in r.stdout


@pytest.mark.slow
def test_profile_refuses_changed_artifact_and_bad_args(onnx_artifacts, tmp_path):
    from lkca_edge.pipelines.profile import profile_artifact

    src = Path(onnx_artifacts["fp32"])
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_name(src.name + ".manifest.json"), tmp_path)
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(UserError, match="does not match its manifest"):
        profile_artifact(copy, runs=1)
    with pytest.raises(UserError, match="--runs must be at least 1"):
        profile_artifact(src, runs=0)
    with pytest.raises(UserError, match="unknown device profile 'pixel8'; did you mean: pixel-8"):
        profile_artifact(src, device="pixel8", runs=1)
    r = cli("profile", str(tmp_path / "nothing.onnx"))
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "not found" in r.stderr


@pytest.mark.slow
def test_not_runnable_backend_gives_static_figures(onnx_artifacts, monkeypatch):
    """The real ONNX backend with its runtime hidden: runnable() gives the reason, nothing runs."""
    import importlib.util

    from lkca_edge.converters import get_backend
    from lkca_edge.pipelines.profile import profile_artifact

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    reason = get_backend("onnx").runnable()
    assert reason and "not installed" in reason
    res = profile_artifact(onnx_artifacts["int8"], device="raspberry-pi-4")
    d = res.to_dict()
    assert d["mode"] == "static"
    assert d["latency_ms"] is None and d["load_ms"] is None and d["first_inference_ms"] is None
    assert d["peak_rss_mb"] is None and d["throughput_ips"] is None
    assert reason in d["note"] and "\n" not in d["note"]
    assert d["size_bytes"] > 0 and d["param_bytes"] == d["params"] and d["macs"] > 0
    assert d["ops"] and all(o["ms"] is None and o["count"] > 0 for o in d["ops"])
    assert d["verdict"]["latency_ok"] is None and d["verdict"]["memory_ok"] is None


@pytest.mark.slow
def test_tflite_child_never_imports_torch(exported):
    """The LiteRT measuring child loads only the LiteRT runtime (a failing export fails here)."""
    from lkca_edge.pipelines.profile import profile_artifact

    art = exported("tflite", "fp32").artifact
    res = profile_artifact(art, runs=5, warmup=1, threads=1, op_runs=0)
    assert res.details["torch_in_child"] is False and res.latency_ms.median > 0


# -- failures become one line -------------------------------------------------------------------
def test_native_crash_in_child_is_one_clear_line(tmp_path):
    from lkca_edge.profiles.local import run_measurement

    crash = [sys.executable, "-c", "import os, signal; print('loading model'); "
                                   "os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(UserError) as err:
        run_measurement(crash, tmp_path / "r.json", "profiling x.onnx", timeout=60)
    msg = str(err.value)
    assert "crashed (SIGSEGV)" in msg and "profiling x.onnx" in msg and "\n" not in msg
    assert signal.SIGSEGV.name in msg and "loading model" in msg


def _fake_runner(tmp_path) -> Path:
    runner = tmp_path / "benchmark_model"
    runner.write_text("#!/bin/sh\nexit 0\n")
    runner.chmod(0o755)
    return runner


@pytest.mark.slow
def test_adb_missing_is_a_clean_error(onnx_artifacts, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    r = cli("profile", str(onnx_artifacts["int8"]), "--device", "pixel-8", "--adb", "--runner",
            str(_fake_runner(tmp_path)), env={"PATH": str(empty)})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "adb not found on PATH" in r.stderr


@pytest.mark.slow
def test_adb_without_device_is_a_clean_error(onnx_artifacts, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text("#!/bin/sh\necho 'List of devices attached'\necho\n")
    adb.chmod(0o755)
    r = cli("profile", str(onnx_artifacts["int8"]), "--device", "pixel-8", "--adb", "--runner",
            str(_fake_runner(tmp_path)), env={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no Android device attached" in r.stderr
    r = cli("profile", str(onnx_artifacts["int8"]), "--device", "raspberry-pi-4", "--adb",
            "--runner", str(_fake_runner(tmp_path)))
    assert r.returncode == 2 and "adb:// profiles Android phones" in r.stderr


# -- on-device runner output parsers ------------------------------------------------------------
# benchmark_model output in the format of recent LiteRT builds (android_arm64, XNNPACK); the
# numbers are illustrative, the layout is the tool's.
BENCHMARK_MODEL_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [4]
INFO: Min warmup runs: [5]
INFO: Graph: [/data/local/tmp/lkca-edge/lkca-1m_tflite_int8.tflite]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/lkca-edge/lkca-1m_tflite_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 112 out of 131 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 20 partitions for the whole graph.
INFO: The input model file size (MB): 1.37549
INFO: Initialized session in 9.842ms.
INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=2113 curr=688 min=671 max=2113 avg=977.6 std=573 p5=671 median=695 p95=2113

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=702 curr=664 min=641 max=1032 avg=689.28 std=61 p5=648 median=676 p95=803

INFO: Inference timings in us: Init: 9842, First inference: 2113, Warmup (avg): 977.6, Inference (avg): 689.28
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=4.41406 overall=6.02344
INFO: Overall peak memory footprint (MB) via periodic monitoring: 9.45312
"""

OP_PROFILE_OUTPUT = """\
INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t   TfLiteXNNPackDelegate\t    0.081\t    0.079\t 11.350%\t 11.350%\t     0.000\t        1\t[xnnpack]:0

============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t   TfLiteXNNPackDelegate\t       20\t     0.512\t    73.563%\t    73.563%\t     0.000\t       20
\t          LAYER_NORM_ISH\t       19\t     0.131\t    18.822%\t    92.385%\t     0.000\t       19
\t                    MEAN\t        1\t     0.053\t     7.615%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=10 first=731 curr=690 min=684 max=731 avg=696 std=13
Memory (bytes): count=0
40 nodes observed
"""

# The older layout (TF 2.3-2.10 builds): no INFO prefix, "Peak memory footprint", no percentiles.
BENCHMARK_MODEL_OLD = """\
STARTING!
Num threads: [2]
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
Initialized session in 16.242ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=36026

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=24904 curr=24950 min=24707 max=25474 avg=2.4968e+04 std=144

Inference timings in us: Init: 16242, First inference: 36026, Warmup (avg): 36026, Inference (avg): 24968
Peak memory footprint (MB): init=4.92969 overall=13.8809
"""


def test_benchmark_model_parser():
    from lkca_edge.profiles.adb import parse_benchmark_model, parse_op_summary

    p = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    lat = p["latency_ms"]
    assert p["runs"] == 50 and p["warmup_runs"] == 5 and p["threads"] == 4
    assert lat["mean"] == pytest.approx(0.68928) and lat["min"] == pytest.approx(0.641)
    assert lat["median"] == pytest.approx(0.676) and lat["p95"] == pytest.approx(0.803)
    assert lat["max"] == pytest.approx(1.032) and lat["std"] == pytest.approx(0.061)
    assert lat["p90"] is None and lat["p99"] is None      # not printed, never invented
    assert p["init_ms"] == pytest.approx(9.842) and p["first_inference_ms"] == pytest.approx(2.113)
    assert p["warmup_avg_ms"] == pytest.approx(0.9776)
    assert p["peak_memory_mb"] == pytest.approx(9.45312)
    assert p["memory_footprint_mb"]["overall"] == pytest.approx(6.02344)
    assert p["model_size_mb"] == pytest.approx(1.37549)
    assert p["delegation"] == {"delegated_nodes": 112, "total_nodes": 131,
                               "delegate": "TfLiteXNNPackDelegate"}

    ops = parse_op_summary(OP_PROFILE_OUTPUT)
    assert [o["op"] for o in ops] == ["TfLiteXNNPackDelegate", "LAYER_NORM_ISH", "MEAN"]
    assert ops[0]["delegated"] is True and ops[1]["delegated"] is False
    assert ops[0]["ms"] == pytest.approx(0.512) and ops[0]["count"] == 20
    # the profiler's own "Timings (microseconds): count=10" line is not the benchmark
    assert parse_benchmark_model(BENCHMARK_MODEL_OUTPUT + OP_PROFILE_OUTPUT)["runs"] == 50

    old = parse_benchmark_model(BENCHMARK_MODEL_OLD)
    assert old["runs"] == 50 and old["threads"] == 2
    assert old["latency_ms"]["mean"] == pytest.approx(24.968) and old["latency_ms"]["median"] is None
    assert old["first_inference_ms"] == pytest.approx(36.026)
    assert old["memory_footprint_mb"]["kind"] == "Peak memory footprint"
    assert old["peak_memory_mb"] is None

    with pytest.raises(UserError, match="no benchmark statistics.*Segmentation fault"):
        parse_benchmark_model("INFO: STARTING!\nSegmentation fault\n")


def test_executor_runner_parser():
    from lkca_edge.profiles.adb import parse_executor_runner

    text = """\
I 00:00:00.001 executorch:executor_runner.cpp:183] Resetting threadpool with num threads = 4
I 00:00:00.004 executorch:executor_runner.cpp:243] Model file /data/local/tmp/lkca-edge/m.pte is loaded.
I 00:00:00.004 executorch:executor_runner.cpp:252] Using method forward
I 00:00:00.004 executorch:executor_runner.cpp:299] Setting up planned buffer 0, size 93184.
I 00:00:00.231 executorch:executor_runner.cpp:399] Model executed successfully 50 time(s) in 61.250000 ms.
I 00:00:00.231 executorch:executor_runner.cpp:408] 1 outputs:
"""
    p = parse_executor_runner(text)
    assert p["runs"] == 50 and p["latency_ms"]["mean"] == pytest.approx(1.225)
    assert p["latency_ms"]["median"] is None and p["planned_memory_bytes"] == 93184
    assert p["threads"] == 4


def test_thread_plan_labels_emulation():
    from lkca_edge.profiles.devices import get_profile
    from lkca_edge.profiles.local import plan_threads

    pi4 = plan_threads(get_profile("raspberry-pi-4"), None, [0, 1])
    assert pi4["threads"] == 2 and pi4["requested"] == 4 and pi4["capped"]
    assert pi4["emulated"] and pi4["label"] == "host-emulated threads" and pi4["cpus"] == [0, 1]
    assert "not on a raspberry-pi-4" in pi4["note"]
    host = plan_threads(get_profile("host"), None, [0, 1, 2])
    assert host["threads"] == 3 and not host["emulated"]
    one = plan_threads(get_profile("pixel-8"), 1, [4, 5, 6, 7])
    assert one["threads"] == 1 and one["cpus"] == [4] and "--threads" in one["note"]


@pytest.mark.slow
def test_verdict_uses_p95_where_a_runner_prints_no_p90(onnx_artifacts):
    from lkca_edge.manifest import read_manifest
    from lkca_edge.profiles.adb import parse_benchmark_model
    from lkca_edge.profiles.devices import get_profile
    from lkca_edge.budgets import make_verdict
    from lkca_edge.profiles.schema import LatencyStats

    lat = LatencyStats(**parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)["latency_ms"])
    manifest = read_manifest(onnx_artifacts["int8"])
    v = make_verdict(get_profile("android-low-end"), manifest, lat, 9.45, "measured on a phone")
    assert v["budgets"]["latency_stat"] == "p95" and v["latency_ok"] is True
    assert v["memory_ok"] is True and v["backend_ok"] is True and v["precision_ok"] is True
    v = make_verdict(get_profile("iphone-15"), manifest, lat, 500.0, "measured on a phone")
    assert v["memory_ok"] is False and v["backend_ok"] is False and "not a backend of iphone-15" in v["note"]
