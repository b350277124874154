"""The ranges of numeric arguments, in one table that the pipelines, the bench and the CLI apply
alike (so the Python API refuses what the command line refuses)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lkca_edge.errors import UserError


@dataclass(frozen=True)
class Range:
    kind: type                   # int or float
    minimum: float
    maximum: float | None = None
    above: bool = False          # the minimum itself is excluded (``--lr`` must be above 0)

    def bounds(self) -> str:
        low = f"above {self.minimum:g}" if self.above else f"at least {self.minimum:g}"
        return low + ("" if self.maximum is None else f" and at most {self.maximum:,}")

    def describe(self) -> str:
        return f"{'an integer' if self.kind is int else 'a finite number'} {self.bounds()}"


RANGES: dict[str, Range] = {
    "runs": Range(int, 1, 1_000_000),
    "warmup": Range(int, 0, 1_000_000),
    "op_runs": Range(int, 0, 100_000),
    "threads": Range(int, 1),                # then capped to this host's usable cores
    "limit": Range(int, 1),
    "calibration_size": Range(int, 1, 1_000_000),
    "images": Range(int, 1, 100_000),
    "epochs": Range(int, 1, 100_000),
    "batch_size": Range(int, 1, 65_536),
    "seed": Range(int, 0, 2**32 - 1),        # numpy's and torch's seeds are unsigned
    "top_k": Range(int, 1),
    "timeout": Range(float, 0, 7 * 24 * 3600, above=True),
    "lr": Range(float, 0, above=True),
}


def check_arg(name: str, value, flag: str | None = None):
    """``value`` when it lies in ``RANGES[name]``, else one UserError line naming the flag."""
    r = RANGES[name]
    flag = flag or "--" + name.replace("_", "-")
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if r.kind is float else int)
    if ok and r.kind is float:
        ok = math.isfinite(value)
    if ok:
        ok = (value > r.minimum if r.above else value >= r.minimum) and \
            (r.maximum is None or value <= r.maximum)
    if not ok:
        typed = not isinstance(value, bool) and isinstance(value, int if r.kind is int else (int, float)) \
            and (r.kind is int or math.isfinite(value))
        # a number of the right kind out of range: just the range ("--runs must be at least 1")
        raise UserError(f"{flag} must be {r.bounds() if typed else r.describe()}, got {value!r}")
    return value


def check_optional(name: str, value, flag: str | None = None):
    """``check_arg`` unless ``value`` is None (the flag was not given)."""
    return None if value is None else check_arg(name, value, flag)


__all__ = ["RANGES", "Range", "check_arg", "check_optional"]
