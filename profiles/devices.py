"""Device profiles: one YAML file per target, parsed into a typed, strict ``DeviceProfile``.

Built-in profiles live in ``profiles/devices/*.yaml`` (installed in ``lkca_edge.profiles``). More directories come from
``--profiles-dir`` and from the environment variable ``LKCA_EDGE_PROFILES`` (a list separated by
``os.pathsep``). A user profile with the name of a built-in replaces it; the listing says where
each one came from.

A profile is data with provenance: every number (and the CPU description) carries a note or URL
in ``sources``; hardware facts cite vendor spec pages and budgets say they are product choices.
Unknown keys are refused with the file and the field named, so a typo never silently becomes a
default.

A profile may say where its device is: ``remote: ssh://pi@raspberrypi.local`` (or
``adb://SERIAL``), and ``remote_command: /home/pi/venv/bin/lkca-edge`` for the board's lkca-edge;
``profile`` and ``bench`` then measure there unless ``--remote`` says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lkca_edge.converters import PRECISIONS, backend_names
from lkca_edge.errors import UserError, unknown_name

ENV_VAR = "LKCA_EDGE_PROFILES"
BUILTIN_DIR = Path(__file__).resolve().parent / "devices"

OS_NAMES = ("android", "ios", "linux", "macos")
APPLE_OS = ("ios", "macos")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
# Every number and the CPU description need a source note.
SOURCED = ("cpu", "threads", "ram_budget_mb", "latency_budget_ms", "accuracy_gate")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    os: str                          # android | ios | linux | macos
    cpu: str
    threads: int | str               # a count, or "all" = every core this process may use
    ram_budget_mb: float             # product choice: peak resident memory allowed
    latency_budget_ms: float         # product choice: p90 batch-1 latency allowed
    accuracy_gate: float             # product choice: max accuracy drop vs fp32, in points
    backends: tuple[str, ...]        # which backends deploy there
    precisions: tuple[str, ...]
    sources: dict                    # field -> note or URL
    coreml_compute_units: str | None = None   # Apple only
    remote: str | None = None        # where the device is: ssh://USER@HOST[:PORT] or adb://SERIAL
    remote_command: str | None = None  # the board's lkca-edge, when not on its PATH
    path: str = ""                   # the file it came from (filled in by the loader)
    builtin: bool = False

    def resolve_threads(self, available: int) -> int:
        """The thread count this profile asks for ("all" = ``available``)."""
        return available if self.threads == "all" else int(self.threads)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backends"], d["precisions"] = list(self.backends), list(self.precisions)
        return d


_REQUIRED = ("name", "description", "os", "cpu", "threads", "ram_budget_mb", "latency_budget_ms",
             "accuracy_gate", "backends", "precisions", "sources")
_ALLOWED = _REQUIRED + ("coreml_compute_units", "remote", "remote_command")
_NOT_SOURCED = ("name", "description", "sources", "remote", "remote_command")


def parse_profile(data, source: str | Path) -> DeviceProfile:
    """Validate one profile's parsed YAML; every error names ``source`` and the field."""
    source = str(source)

    def bad(field_name: str, why: str) -> UserError:
        return UserError(f"{source}: field {field_name!r}: {why}")

    if not isinstance(data, dict):
        raise UserError(f"{source}: a device profile must be a YAML mapping of fields, "
                        f"got {type(data).__name__}")
    for key in data:
        if key not in _ALLOWED:
            import difflib

            close = difflib.get_close_matches(str(key), _ALLOWED, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{source}: unknown field {key!r}{hint}; valid fields: {', '.join(_ALLOWED)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise UserError(f"{source}: missing field(s) {', '.join(repr(m) for m in missing)}")

    def text(key: str) -> str:
        v = data[key]
        if not isinstance(v, str) or not v.strip():
            raise bad(key, "must be a non-empty string")
        return v.strip()

    def number(key: str, minimum: float, allow_zero: bool = False) -> float:
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad(key, f"must be a number, got {v!r}")
        if v < minimum or (v == minimum and not allow_zero):
            raise bad(key, f"must be {'at least' if allow_zero else 'above'} {minimum:g}, got {v!r}")
        return float(v)

    def names(key: str, valid: tuple[str, ...]) -> tuple[str, ...]:
        v = data[key]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise bad(key, f"must be a non-empty list drawn from {', '.join(valid)}")
        for x in v:
            if x not in valid:
                raise bad(key, f"unknown value {x!r} (valid: {', '.join(valid)})")
        if len(set(v)) != len(v):
            raise bad(key, "lists a value twice")
        return tuple(v)

    name = text("name")
    stem = Path(source).stem
    if Path(source).suffix in (".yaml", ".yml") and name != stem:
        raise bad("name", f"{name!r} must match the file name ({stem!r})")
    os_name = text("os")
    if os_name not in OS_NAMES:
        raise bad("os", f"unknown value {os_name!r} (valid: {', '.join(OS_NAMES)})")

    threads = data["threads"]
    if threads != "all" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise bad("threads", f"must be a positive integer or \"all\", got {threads!r}")

    backends = names("backends", tuple(backend_names()))
    if "coreml" in backends and os_name not in APPLE_OS:
        raise bad("backends", f"coreml runs only on Apple devices (os is {os_name!r})")

    units = data.get("coreml_compute_units")
    if units is not None:
        if "coreml" not in backends:
            raise bad("coreml_compute_units", "only applies when backends include coreml")
        if units not in COMPUTE_UNITS:
            raise bad("coreml_compute_units", f"unknown value {units!r} (valid: {', '.join(COMPUTE_UNITS)})")

    sources = data["sources"]
    if not isinstance(sources, dict):
        raise bad("sources", "must be a mapping of field -> note or URL")
    for key, note in sources.items():
        if key not in _ALLOWED or key in _NOT_SOURCED:
            raise bad(f"sources.{key}", f"names no sourced field (sourced fields: "
                                        f"{', '.join(k for k in _ALLOWED if k not in _NOT_SOURCED)})")
        if not isinstance(note, str) or not note.strip():
            raise bad(f"sources.{key}", "must be a non-empty note or URL")
    needed = list(SOURCED) + (["coreml_compute_units"] if units is not None else [])
    unsourced = [k for k in needed if k not in sources]
    if unsourced:
        raise bad("sources", f"needs a note or URL for {', '.join(unsourced)}")

    remote = data.get("remote")
    if remote is not None:
        from lkca_edge.profiles.remote import parse_remote

        if not isinstance(remote, str) or not remote.strip():
            raise bad("remote", "must be ssh://USER@HOST[:PORT] or adb://SERIAL")
        try:
            parse_remote(remote)
        except UserError as exc:
            raise bad("remote", str(exc).removeprefix("--remote ")) from None
        remote = remote.strip()
    remote_command = data.get("remote_command")
    if remote_command is not None:
        if not isinstance(remote_command, str) or not remote_command.strip():
            raise bad("remote_command", "must be the path of the board's lkca-edge")
        if remote is None:
            raise bad("remote_command", "only applies with a remote:")
        remote_command = remote_command.strip()

    return DeviceProfile(
        name=name, description=text("description"), os=os_name, cpu=text("cpu"), threads=threads,
        ram_budget_mb=number("ram_budget_mb", 0), latency_budget_ms=number("latency_budget_ms", 0),
        accuracy_gate=number("accuracy_gate", 0, allow_zero=True), backends=backends,
        precisions=names("precisions", PRECISIONS), sources=dict(sources),
        coreml_compute_units=units, remote=remote, remote_command=remote_command)


def load_profile_file(path: str | Path, builtin: bool = False) -> DeviceProfile:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read device profile {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{at} ({getattr(exc, 'problem', None) or exc})") from None
    return replace(parse_profile(data, path), path=str(path), builtin=builtin)


def profile_dirs(profiles_dir: str | Path | list | tuple | None = None) -> list[Path]:
    """User directories, lowest precedence first: ``LKCA_EDGE_PROFILES``, then ``profiles_dir``."""
    env = os.environ.get(ENV_VAR, "")
    dirs = [(Path(p).expanduser(), ENV_VAR) for p in env.split(os.pathsep) if p.strip()]
    if profiles_dir:
        extra = profiles_dir if isinstance(profiles_dir, (list, tuple)) else [profiles_dir]
        dirs += [(Path(p).expanduser(), "--profiles-dir") for p in extra]
    for d, origin in dirs:
        if not d.is_dir():
            raise UserError(f"device profile directory not found: {d} (from {origin})")
    return [d for d, _ in dirs]


def load_profiles(profiles_dir=None) -> dict[str, DeviceProfile]:
    """Built-in profiles plus user directories (later ones replace profiles of the same name)."""
    found: dict[str, DeviceProfile] = {}
    for f in sorted(BUILTIN_DIR.glob("*.yaml")):
        p = load_profile_file(f, builtin=True)
        found[p.name] = p
    for d in profile_dirs(profiles_dir):
        files = sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml")))
        for f in files:
            p = load_profile_file(f)
            found[p.name] = p
    return found


def get_profile(name: str, profiles_dir=None) -> DeviceProfile:
    profiles = load_profiles(profiles_dir)
    if name not in profiles:
        raise unknown_name("device profile", name, sorted(profiles))
    return profiles[name]


__all__ = ["DeviceProfile", "ENV_VAR", "get_profile", "load_profile_file", "load_profiles",
           "parse_profile", "profile_dirs"]

