"""Measuring on the device itself: a Linux board over SSH, an Android phone over adb.

``--remote`` takes one of:

- ``ssh://[USER@]HOST[:PORT]``: a board with lkca-edge installed (``pip install
  'lkca-edge[runtime-litert]'``, ``-onnx`` or ``-executorch``). The artifact and every file that
  travels with it (``<artifact>.*``: manifest, validation pack, labels) and the device profile go
  to a new temporary directory on the board; the board's own ``lkca-edge profile|validate --json``
  runs there, its JSON comes back and the directory is removed (by the board's shell on exit,
  whatever happened). The system's OpenSSH client does the work, so the user's ``~/.ssh/config``,
  keys and agent apply; ``BatchMode`` means no password prompt can hang a run.
  ``LKCA_EDGE_SSH_CONFIG=FILE`` passes ``-F FILE`` (OpenSSH reads ``~/.ssh/config`` from the
  passwd home, not ``$HOME``), ``--ssh-option OPT`` / ``LKCA_EDGE_SSH_OPTIONS`` (one option a
  line) pass ``-o OPT``.
- ``adb://[SERIAL]``: an Android phone over adb with an on-device runner (``profiles.adb``).
- ``local``: this machine (overrides a device profile's ``remote:``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lkca_edge.errors import UserError
from lkca_edge.fileio import temporary_directory

SSH_CONFIG_ENV = "LKCA_EDGE_SSH_CONFIG"
SSH_OPTIONS_ENV = "LKCA_EDGE_SSH_OPTIONS"
DEFAULT_COMMAND = "lkca-edge"
CONNECT_TIMEOUT_S = 15
MARK = "lkca-edge-remote:"      # the remote script's own lines on stderr
NO_COMMAND, NO_TEMP = 97, 98    # its exit codes (ssh itself exits 255)
EXAMPLES = "ssh://USER@HOST[:PORT], adb://SERIAL, adb:// or local"


@dataclass(frozen=True)
class SshTarget:
    """A board reached with OpenSSH."""

    url: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


@dataclass(frozen=True)
class AdbTarget:
    """An Android device reached with adb (``serial`` None: the only one attached)."""

    url: str
    serial: str | None = None


def parse_remote(url: str | None) -> SshTarget | AdbTarget | None:
    """``ssh://USER@HOST[:PORT]`` -> SshTarget, ``adb://[SERIAL]`` -> AdbTarget, ``local`` or
    None -> None; anything else is refused with one line."""
    if url is None:
        return None
    text = str(url).strip()
    if text in ("local", "localhost:", ""):
        return None
    if "://" not in text:
        raise UserError(f"--remote {text!r}: expected {EXAMPLES}")
    scheme = text.split("://", 1)[0].lower()
    if scheme == "adb":
        serial = unquote(text.split("://", 1)[1]).strip("/") or None
        if serial is not None and (serial.startswith("-") or any(c.isspace() for c in serial)):
            raise UserError(f"--remote {text!r}: not a device serial")
        return AdbTarget(text, serial)
    if scheme != "ssh":
        raise UserError(f"--remote {text!r}: unknown scheme {scheme!r} (expected {EXAMPLES})")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"--remote {text!r}: {exc}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UserError(f"--remote {text!r}: an ssh URL names a board, not a path on it "
                        f"(ssh://USER@HOST[:PORT])")
    if parts.password is not None:
        raise UserError(f"--remote {text!r}: no passwords in the URL; ssh uses your keys and agent")
    host = parts.hostname
    user = unquote(parts.username) if parts.username else None
    if not host:
        raise UserError(f"--remote {text!r}: no host (ssh://USER@HOST[:PORT])")
    for what, value in (("host", host), ("user", user)):
        if value is not None and (value.startswith("-") or any(c.isspace() or c in "'\"`$;|&<>\\"
                                                               for c in value)):
            raise UserError(f"--remote {text!r}: not a valid {what} name")
    return SshTarget(text, host, user, port)


# -- ssh ------------------------------------------------------------------------------------------
def ssh_options(extra=()) -> list[str]:
    """``-o`` options: ``LKCA_EDGE_SSH_OPTIONS`` (one a line), then ``extra`` (--ssh-option)."""
    env = [line.strip() for line in os.environ.get(SSH_OPTIONS_ENV, "").splitlines()]
    return [o for o in [*env, *(extra or ())] if o]


def ssh_argv(target: SshTarget, remote_command: str, options=()) -> list[str]:
    """The OpenSSH command line that runs ``remote_command`` (a shell command) on the board."""
    ssh = shutil.which(os.environ.get("LKCA_EDGE_SSH", "ssh"))
    if ssh is None:
        raise UserError("ssh not found on PATH: --remote ssh:// uses the system's OpenSSH client "
                        "(apt-get install openssh-client)")
    argv = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    config = os.environ.get(SSH_CONFIG_ENV)
    if config:
        if not Path(config).is_file():
            raise UserError(f"{SSH_CONFIG_ENV}={config}: no such ssh config file")
        argv += ["-F", config]
    for option in ssh_options(options):
        argv += ["-o", option]
    if target.port is not None:
        argv += ["-p", str(target.port)]
    return argv + ["--", target.destination, remote_command]


_CPU_PROBE = (
    "cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n 1); "
    "[ -n \"$cpu\" ] || cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1); "
    "[ -n \"$cpu\" ] || cpu=$(sed -n 's/^\\(Model\\|Hardware\\|cpu model\\)[[:space:]]*:[[:space:]]*//p' "
    "/proc/cpuinfo 2>/dev/null | head -n 1); "
)


def board_script(command: list[str], arguments: list[str]) -> str:
    """The POSIX sh script run on the board: check the command, make a temporary directory
    (removed on exit, whatever happens), unpack the bundle from stdin, run, pass its exit code."""
    cmd = shlex.join(command)
    return (
        f"c={shlex.quote(command[0])}; "
        f"if ! command -v \"$c\" >/dev/null 2>&1; then echo \"{MARK} no-command\" >&2; exit {NO_COMMAND}; fi; "
        f"d=$(mktemp -d \"${{TMPDIR:-/tmp}}/lkca-edge.XXXXXXXX\") || "
        f"{{ echo \"{MARK} no-tempdir\" >&2; exit {NO_TEMP}; }}; "
        "trap 'rm -rf \"$d\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; "
        f"tar -xf - -C \"$d\" || {{ echo \"{MARK} untar-failed\" >&2; exit {NO_TEMP}; }}; "
        + _CPU_PROBE +
        f"echo \"{MARK} uname=$(uname -m)\" >&2; echo \"{MARK} cpu=$cpu\" >&2; "
        f"echo \"{MARK} dir=$d\" >&2; "
        f"cd \"$d\" && {cmd} {shlex.join(arguments)}; exit $?"
    )


@dataclass
class BoardRun:
    """What one run on a board returned."""

    stdout: str
    stderr: str           # the board's own stderr, without the script's marker lines
    returncode: int
    machine: str | None   # uname -m
    cpu: str | None
    workdir: str | None   # the temporary directory (already removed)

    def json(self, what: str, url: str) -> dict:
        """The JSON object the board's ``--json`` printed; a failure there is one line."""
        text = self.stdout.strip()
        start = text.find("{")
        if start >= 0:
            try:
                obj = json.loads(text[start:])
                if isinstance(obj, dict):
                    return obj
            except json.JSONDecodeError:
                pass
        raise UserError(f"{what} on {url} failed" + (f": {self.error_line()}" if self.error_line()
                                                     else f" (exit {self.returncode}, no JSON)"))

    def error_line(self) -> str:
        """The board's last stderr line, without lkca-edge's 'lkca-edge CMD: error: ' prefix."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        if not lines:
            return ""
        line = lines[-1]
        if line.startswith("lkca-edge ") and ": error: " in line:
            line = line.split(": error: ", 1)[1]
        return line[:400]


def _bundle(files: list[tuple[Path, str]], into: Path) -> Path:
    """A tar of ``(path, name in the bundle)``; directories (a .mlpackage) whole."""
    tar_path = into / "bundle.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path, name in files:
            tar.add(str(path), arcname=name, recursive=True)
    return tar_path


def run_on_board(target: SshTarget, command: str | None, arguments: list[str],
                 files: list[tuple[Path, str]], *, options=(), timeout: float | None = 600.0,
                 what: str = "lkca-edge") -> BoardRun:
    """Copy ``files`` to a new temporary directory on the board, run ``command arguments``
    there (paths in ``arguments`` relative to it), return its output; the directory is removed
    by the board's shell as the command ends. Unreachable host, refused login and no lkca-edge
    on the board are one line each."""
    words = shlex.split(command or DEFAULT_COMMAND)
    if not words:
        raise UserError("--remote-command is empty")
    script = board_script(words, arguments)
    argv = ssh_argv(target, "sh -c " + shlex.quote(script), options)
    with temporary_directory("remote") as tmp:
        bundle = _bundle(files, Path(tmp))
        try:
            with open(bundle, "rb") as stdin:
                proc = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what} on {target.url} did not finish within {timeout:g} s "
                            f"(raise --timeout or lower --runs)") from None
        except OSError as exc:
            raise UserError(f"cannot start ssh: {exc.strerror or exc}") from None
    out = proc.stdout.decode("utf-8", "replace")
    err_lines, marks = [], {}
    for line in proc.stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(MARK):
            key, _, value = line[len(MARK):].strip().partition("=")
            marks[key] = value.strip()
        else:
            err_lines.append(line)
    run = BoardRun(out, "\n".join(err_lines), proc.returncode, marks.get("uname") or None,
                   marks.get("cpu") or None, marks.get("dir") or None)
    if "no-command" in marks or proc.returncode == NO_COMMAND and not out.strip():
        raise UserError(f"no lkca-edge on {target.url}: {words[0]!r} is not a command there "
                        f"(install it on the board: pip install 'lkca-edge[runtime-litert]' "
                        f"(or -onnx, -executorch), or name it with --remote-command PATH)")
    if "no-tempdir" in marks or "untar-failed" in marks:
        raise UserError(f"cannot copy the artifact to a temporary directory on {target.url} "
                        f"({run.error_line() or 'mktemp or tar failed there'})")
    if proc.returncode == 255 and "uname" not in marks:
        raise UserError(_ssh_failure(target, run.error_line()))
    return run


def _ssh_failure(target: SshTarget, line: str) -> str:
    """One line for ssh's own failure (exit 255)."""
    low = line.lower()
    where = f"ssh {'-p ' + str(target.port) + ' ' if target.port else ''}{target.destination}"
    if "permission denied" in low:
        return (f"cannot log in to {target.url}: {line} (ssh runs non-interactively: a key the "
                f"agent or ~/.ssh/config offers must be accepted there)")
    if "host key verification failed" in low or "host key" in low and "changed" in low:
        return (f"cannot log in to {target.url}: {line} (connect once with `{where}` to check "
                f"and accept the board's host key)")
    return f"cannot reach {target.url}: {line or 'ssh failed with exit code 255'}"


# -- profile and validate on a board ------------------------------------------------------------
def travelling_files(artifact: Path) -> list[tuple[Path, str]]:
    """The artifact and every ``<artifact>.*`` beside it (manifest, validation pack, labels)."""
    files = [(artifact, artifact.name)]
    files += [(p, p.name) for p in sorted(artifact.parent.glob(artifact.name + ".*"))
              if p.is_file() and not p.name.endswith((".tmp", ".part"))]
    return files


def where_measured(target: SshTarget, run: BoardRun, host: dict | None = None) -> str:
    """'ssh://pi@board (aarch64, Cortex-A72)': the remote as given, uname -m and CPU model."""
    machine = run.machine or (host or {}).get("machine") or "unknown machine"
    cpu = run.cpu or (host or {}).get("cpu") or "unknown CPU"
    return f"{target.url} ({machine}, {cpu})"


def profile_over_ssh(target: SshTarget, artifact: Path, manifest, backend, profile, *,
                     command: str | None, options=(), threads: int | None, runs: int,
                     warmup: int, op_runs: int, timeout: float | None,
                     verify: bool):
    """``lkca-edge profile --on-device --json`` on the board; its figures with a verdict that
    names the board."""
    from lkca_edge.budgets import make_verdict
    from lkca_edge.profiles.schema import ProfileResult

    files = travelling_files(artifact)
    if profile.path:
        files.append((Path(profile.path), f"profiles/{profile.name}.yaml"))
    args = ["profile", artifact.name, "--device", profile.name, "--on-device", "--json",
            "--runs", str(runs), "--warmup", str(warmup), "--op-runs", str(op_runs),
            "--remote", "local"]
    if profile.path:
        args += ["--profiles-dir", "profiles"]
    if threads is not None:
        args += ["--threads", str(threads)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if not verify:
        args.append("--no-verify")
    run = run_on_board(target, command, args, files, options=options,
                       timeout=None if timeout is None else timeout + 60,
                       what=f"profiling {artifact.name}")
    data = run.json(f"profiling {artifact.name}", target.url)
    try:
        board = ProfileResult.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"the lkca-edge on {target.url} printed a profile this one cannot read "
                        f"({exc}); install the same lkca-edge version there") from None
    if board.mode == "static":
        raise UserError(f"{backend.name} cannot run on {target.url}: "
                        f"{board.note.removeprefix('not run on this host: ')}")
    where = where_measured(target, run, board.host)
    t = board.threads
    measured_on = f"measured on {where} with {t} thread{'s' if t != 1 else ''}"
    memory = board.memory or {}
    device_mb = memory.get("device_memory_mb", board.peak_rss_mb)
    host = dict(board.host or {}, remote=target.url, uname_m=run.machine, cpu_probe=run.cpu)
    board_artifact = board.artifact if board.artifact.startswith("/") or not run.workdir \
        else f"{run.workdir}/{board.artifact}"
    details = dict(board.details or {}, board_artifact=board_artifact, board_workdir=run.workdir,
                   remote=target.url, remote_command=command or DEFAULT_COMMAND,
                   board_verdict_note=(board.verdict or {}).get("note"))
    return ProfileResult(**{**board.__dict__, "artifact": str(artifact), "host": host,
                            "details": details, "mode": "ssh",
                            "verdict": make_verdict(profile, manifest, board.latency_ms, device_mb,
                                                    measured_on)})


def validate_over_ssh(target: SshTarget, artifact: Path, *, command: str | None, options=(),
                      limit: int | None, threads: int, verify: bool, timeout: float | None = 1800.0):
    """``lkca-edge validate --json`` on the board, on the artifact's validation pack: the gate
    recomputed where the runtime runs."""
    from lkca_edge.gates import ValidationResult

    args = ["validate", artifact.name, "--json", "--threads", str(threads)]
    if limit is not None:
        args += ["--limit", str(limit)]
    if not verify:
        args.append("--no-verify")
    run = run_on_board(target, command, args, travelling_files(artifact), options=options,
                       timeout=timeout, what=f"validating {artifact.name}")
    data = run.json(f"validating {artifact.name}", target.url)
    known = set(ValidationResult.__dataclass_fields__)
    try:
        result = ValidationResult(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise UserError(f"the lkca-edge on {target.url} printed a validation this one cannot "
                        f"read ({exc}); install the same lkca-edge version there") from None
    if not result.runnable:
        reason = result.note.split(": ", 1)[-1] if result.note else "its runtime is missing there"
        raise UserError(f"{result.backend} cannot run on {target.url}: {reason}")
    result.note = f"{result.note} (run on {where_measured(target, run)})".strip()
    return result
