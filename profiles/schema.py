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
    peak_rss_mb: float | None                # child process peak resident set (runtime + model)
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
    mode: str = ""                                  # measured | static | adb
    params: int | None = None                       # from the manifest
    macs: int | None = None                         # from the manifest (batch 1)
    details: dict = field(default_factory=dict)     # how it was measured: inputs, cpus, sources

    def to_dict(self) -> dict:
        return asdict(self)
