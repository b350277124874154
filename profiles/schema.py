"""One result schema for every profiler (what `lkca-edge profile --json` prints)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields


@dataclass
class LatencyStats(Mapping):
    """Latency statistics in ms; also a read-only mapping (``stats["median"]``, ``dict(stats)``)."""

    min: float | None
    median: float | None
    p90: float | None         # None where the tool reports no such percentile (adb runners)
    p99: float | None
    mean: float
    std: float | None
    p95: float | None = None
    max: float | None = None

    def __getitem__(self, key: str) -> float | None:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class ProfileResult:
    backend: str
    precision: str
    recipe: str
    model: str
    form: str | None
    device: str
    threads: int
    runs: int
    warmup: int
    latency_ms: LatencyStats | None          # None where this OS cannot run the artifact
    throughput_ips: float | None             # images per second at batch 1
    load_ms: float | None                    # cold start: load + prepare the artifact
    first_inference_ms: float | None
    peak_rss_mb: float | None                # the measuring process's peak resident set (runtime + model)
    rss_growth_mb: float | None              # RSS after the timed runs minus RSS before load
    planned_memory_bytes: int | None         # what the runtime itself plans, where it says so
    planned_memory_label: str | None         # what that figure is (e.g. "ExecuTorch planned buffers")
    size_bytes: int                          # artifact bytes on disk
    param_bytes: int | None                  # bytes of stored weights
    ops: list[dict] = field(default_factory=list)   # [{op, ms, count, delegated}]
    verdict: dict = field(default_factory=dict)     # {memory_ok, latency_ok, note}
    host: dict = field(default_factory=dict)        # {cpu, cores, os, emulated_threads}
    versions: dict = field(default_factory=dict)
    note: str = ""                                  # e.g. "latency needs macOS"
    artifact: str = ""                              # the artifact's path
    mode: str = ""                                  # measured | static | adb | ssh
    params: int | None = None                       # from the manifest
    macs: int | None = None                         # from the manifest (batch 1)
    details: dict = field(default_factory=dict)     # how it was measured: inputs, cpus, sources
    # Memory as separate, labelled figures (MEMORY_FIELDS); ``device_memory_mb`` is the one the
    # memory verdict holds against the budget, ``basis`` says what it is.
    memory: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ProfileResult":
        """The result a ``profile --json`` printed (e.g. on a board), unknown keys refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown profile fields {unknown}")
        d = dict(data)
        if isinstance(d.get("latency_ms"), dict):
            d["latency_ms"] = LatencyStats(**d["latency_ms"])
        return cls(**d)


# What each figure of ``ProfileResult.memory`` is (the labels travel with every result).
MEMORY_FIELDS = {
    "runtime_rss_mb": "peak resident set of the measuring process: Python, numpy, the runtime "
                      "and the model",
    "model_rss_mb": "the model's own peak: peak resident set minus the resident set with the "
                    "runtime loaded and no model yet",
    "activation_arena_bytes": "planned activation arena: the sum of the execution plan's "
                              "non-constant buffer sizes in the .pte (forward)",
    "constant_bytes": "constant (weight) bytes stored in the artifact",
    "device_memory_mb": "what the device would hold: the figure the memory verdict uses",
}
