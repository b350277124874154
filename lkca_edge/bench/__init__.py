"""``lkca-edge bench``, the main job, as a package: ``config`` (what a run is asked to do), ``cell``
(one model x backend x precision), ``state`` (the run directory), ``lock`` (a PID lock),
``signals`` (stopping between cells), ``progress`` and ``run`` (the orchestration)."""

from lkca_edge.bench.config import BenchConfig, split_names
from lkca_edge.bench.run import BenchOutcome, resume_bench, run_bench, versions, write_outputs

__all__ = ["BenchConfig", "BenchOutcome", "resume_bench", "run_bench", "split_names", "versions",
           "write_outputs"]
