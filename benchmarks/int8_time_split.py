"""Where the best int8 artifact's time goes: LiteRT static int8 of lkca-1m (form fused, the
default export) against ablated copies converted the same way, ``invoke()`` only, alternated.

One variant is the same model with LayerNorm left to litert-torch's own lowering (recipe option
``explicit_norms=False``: the A/B of the converter's 7-op LayerNorm). The others are diagnostics,
not equivalent models: GELU -> ReLU (ReLU fuses into the
FULLY_CONNECTED and the graph becomes one XNNPACK partition), no LayerNorm, and the GEMMs with
their transposes alone (the floor any form of this network has on this runtime).

    .venv/bin/python benchmarks/int8_time_split.py [--rounds 10] [--runs 200] [--threads 1]
    .venv/bin/python benchmarks/int8_time_split.py --json benchmarks/results/int8_time_split.json

Prints a Markdown table; ``--json`` also writes the result file ``benchmarks/render_readme.py``
reads (schema ``lkca-edge-int8-time-split/1``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "lkca-edge-int8-time-split/1"
FULL = "full"
# variant key -> what it is, in words (the README's row labels)
VARIANTS = {
    FULL: "full model (default export)",
    "lowered-norms": "same, LayerNorm as litert-torch lowers it (not the converter's 7-op rewrite)",
    "gelu-relu": "GELU → ReLU (diagnostic, not equivalent)",
    "no-norm": "no LayerNorm (diagnostic)",
    "gemm-only": "GEMMs + transposes only (diagnostic: the GEMM floor)",
}
# op types shown beside each variant (the rest are in the JSON)
SHOWN_OPS = ("FULLY_CONNECTED", "TRANSPOSE", "GELU", "DELEGATE")


def _no_gelu(m):
    import torch.nn.functional as F

    m = copy.deepcopy(m)
    for b in m.blocks:
        def fwd(self, x):
            x = x + self.mixer(self.mixer_norm(x))
            return x + self.mlp.fc2(F.relu(self.mlp.fc1(self.mlp_norm(x))))
        b.forward = fwd.__get__(b)
    return m


def _no_norm(m):
    from torch import nn

    m = copy.deepcopy(m)
    for b in m.blocks:
        b.mixer_norm = nn.Identity()
        b.mlp_norm = nn.Identity()
    m.head_norm = nn.Identity()
    return m


def _gemm_only(m):
    import torch.nn.functional as F
    from torch import nn

    from lkca_edge.models import patchify

    class GemmOnly(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = copy.deepcopy(m)

        def forward(self, images):
            m = self.m
            x = m.patch_embed(patchify(images, m.config.patch_size))
            for b in m.blocks:
                x = F.linear(x.transpose(1, 2), b.mixer.token_mixing_matrix).transpose(1, 2)
                x = b.mlp.fc2(b.mlp.fc1(b.mixer.proj(x)))
            return m.head(x.mean(1))

    return GemmOnly(m)


def build_variants(full, recipe) -> dict:
    """variant key -> (module, recipe): the fused lkca-1m and its ablated copies."""
    # the same model with LayerNorm as litert-torch lowers it instead of the 7-op rewrite
    lowered = dataclasses.replace(recipe, options=recipe.options + (("explicit_norms", False),))
    return {FULL: (full, recipe), "lowered-norms": (full, lowered),
            "gelu-relu": (_no_gelu(full), recipe), "no-norm": (_no_norm(full), recipe),
            "gemm-only": (_gemm_only(full), recipe)}


def convert_and_load(variants: dict, calibration, threads: int, work: Path) -> dict:
    """variant key -> (interpreter ready to invoke, op counts by type)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from lkca_edge.converters import get_backend
    from lkca_edge.logs import quiet

    backend = get_backend("tflite")
    loaded = {}
    for i, (name, (module, recipe)) in enumerate(variants.items()):
        path = work / f"variant_{i}.tflite"
        with quiet():
            backend.convert(module.eval(), calibration[:1], recipe, calibration, path)
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        loaded[name] = (it, Counter(op["op_name"] for op in it._get_ops_details()))
    return loaded


def time_alternated(loaded: dict, rounds: int, runs: int) -> tuple[dict, list]:
    """Per variant, the mean ms of ``runs`` invokes in each round; variants alternate within
    every round. Also the 1-minute load average before each round."""
    from lkca_edge.hostinfo import load_average

    for it, _ in loaded.values():
        for _ in range(200):
            it.invoke()
    per_round: dict[str, list[float]] = {k: [] for k in loaded}
    loads = []
    for _ in range(rounds):
        loads.append((load_average() or [None])[0])
        for k, (it, _) in loaded.items():
            t = time.perf_counter()
            for _ in range(runs):
                it.invoke()
            per_round[k].append((time.perf_counter() - t) / runs * 1e3)
    return per_round, loads


def measure(rounds: int, runs: int, threads: int, argv: list[str]) -> dict:
    """The whole measurement as a result dict."""
    import numpy as np

    from lkca_edge.bench import versions
    from lkca_edge.builder import create_model
    from lkca_edge.converters import get_backend
    from lkca_edge.data import load_dataset
    from lkca_edge.hostinfo import host_info

    host = host_info()
    src = create_model("lkca-1m", pretrained=True, form="fused")
    full = src.export_module()
    calibration = load_dataset("digits", src.preprocessing).calibration(128)
    recipe = get_backend("tflite").recipe("int8")
    with tempfile.TemporaryDirectory(prefix="lkca-int8-split-") as work:
        loaded = convert_and_load(build_variants(full, recipe), calibration, threads, Path(work))
        per_round, loads = time_alternated(loaded, rounds, runs)
    return {
        "schema": SCHEMA,
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python",
                                                     "benchmarks/int8_time_split.py", *argv]),
        "finished": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
        "host": host, "versions": versions(),
        "settings": {"model": "lkca-1m", "form": "fused", "backend": "tflite",
                     "recipe": recipe.name, "rounds": rounds, "runs": runs, "threads": threads,
                     "calibration_images": int(len(calibration))},
        "loadavg_per_round": loads,
        "variants": [{"key": k, "label": VARIANTS[k], "ops": int(sum(ops.values())),
                      "op_counts": dict(sorted(ops.items())),
                      "median_ms": float(np.median(per_round[k])), "min_ms": float(min(per_round[k])),
                      "round_ms": [round(x, 4) for x in per_round[k]]}
                     for k, (_, ops) in loaded.items()],
    }


def table(result: dict) -> str:
    """The Markdown table of a result (what the script prints and the README shows)."""
    rows = {v["key"]: v for v in result["variants"]}
    base = rows[FULL]["median_ms"]
    out = ["| variant | ops | " + " | ".join(SHOWN_OPS) + " | median ms | min ms | full − variant |",
           "|---|---|" + "---|" * len(SHOWN_OPS) + "---|---|---|"]
    for v in result["variants"]:
        diff = base - v["median_ms"]
        vs = "–" if v["key"] == FULL else f"{diff:+.3f} ms ({diff / base:+.0%} of full)"
        counts = " | ".join(str(v["op_counts"].get(op, 0)) for op in SHOWN_OPS)
        out.append(f"| {v['label']} | {v['ops']} | {counts} | {v['median_ms']:.3f} | "
                   f"{v['min_ms']:.3f} | {vs} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=200, help="invokes per variant per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", metavar="PATH", help="also write the result file here")
    args = ap.parse_args(argv)
    for name, value in (("--rounds", args.rounds), ("--runs", args.runs), ("--threads", args.threads)):
        if value < 1:
            ap.error(f"{name} must be at least 1, got {value}")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lkca_edge.fileio import write_json

    result = measure(args.rounds, args.runs, args.threads,
                     list(sys.argv[1:] if argv is None else argv))
    print(table(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
