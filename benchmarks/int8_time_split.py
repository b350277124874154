"""Where the best int8 artifact's time goes: LiteRT static int8 of lkca-1m (form fused, the
default export) against ablated copies converted the same way, ``invoke()`` only, alternated.

One variant is the same model with LayerNorm left to litert-torch's own lowering (recipe option
``explicit_norms=False``: the A/B of the converter's 7-op LayerNorm). The others are diagnostics,
not equivalent models: GELU -> ReLU (ReLU fuses into the
FULLY_CONNECTED and the graph becomes one XNNPACK partition), no LayerNorm, and the GEMMs with
their transposes alone (the floor any form of this network has on this runtime).

    .venv/bin/python benchmarks/int8_time_split.py [--rounds 10] [--runs 200] [--threads 1]
"""
import argparse
import copy
import dataclasses
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--rounds", type=int, default=10)
ap.add_argument("--runs", type=int, default=200)
ap.add_argument("--threads", type=int, default=1)
args = ap.parse_args()
from lkca_edge.builder import create_model
from lkca_edge.data import load_dataset
from lkca_edge.converters import get_backend
from lkca_edge.logs import quiet

src = create_model("lkca-1m", pretrained=True, form="fused")
full = src.export_module()
data = load_dataset("digits", src.preprocessing)
cal = data.calibration(128)

def no_gelu(m):
    m = copy.deepcopy(m)
    for b in m.blocks:
        def fwd(self, x):
            x = x + self.mixer(self.mixer_norm(x))
            return x + self.mlp.fc2(F.relu(self.mlp.fc1(self.mlp_norm(x))))
        b.forward = types.MethodType(fwd, b)
    return m

def no_norm(m):
    m = copy.deepcopy(m)
    for b in m.blocks: b.mixer_norm = nn.Identity(); b.mlp_norm = nn.Identity()
    m.head_norm = nn.Identity()
    return m

class GemmOnly(nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = copy.deepcopy(m)
    def forward(self, images):
        from lkca_edge.models import patchify
        m = self.m
        x = m.patch_embed(patchify(images, m.config.patch_size))
        for b in m.blocks:
            x = F.linear(x.transpose(1, 2), b.mixer.token_mixing_matrix).transpose(1, 2)
            x = b.mlp.fc2(b.mlp.fc1(b.mixer.proj(x)))
        return m.head(x.mean(1))

be = get_backend("tflite"); rec = be.recipe("int8")
# the same model with LayerNorm as litert-torch lowers it (12 ops) instead of the 7-op rewrite
lowered_norms = dataclasses.replace(rec, options=rec.options + (("explicit_norms", False),))
variants = {"full": (full, rec),
            "LayerNorm as litert-torch lowers it": (full, lowered_norms),
            "gelu->relu (diagnostic)": (no_gelu(full), rec),
            "no LayerNorm (diagnostic)": (no_norm(full), rec),
            "GEMMs + transposes only": (GemmOnly(full), rec)}
its = {}
work = tempfile.TemporaryDirectory()
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
for name, (m, recipe) in variants.items():
    p = Path(work.name) / f"variant_{len(its)}.tflite"
    with quiet(): be.convert(m.eval(), cal[:1], recipe, cal, p)
    with quiet():
        it = Interpreter(model_path=str(p), num_threads=args.threads); it.allocate_tensors()
    d = it.get_input_details()[0]; it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    ops = it._get_ops_details()
    its[name] = (it, len(ops))
res = {k: [] for k in its}
for k, (it, _) in its.items():
    for _ in range(200): it.invoke()
for _ in range(args.rounds):
    for k, (it, _) in its.items():
        t = time.perf_counter()
        for _ in range(args.runs): it.invoke()
        res[k].append((time.perf_counter() - t) / args.runs * 1e3)
base = np.median(res["full"])
print("| variant | ops | median ms | min ms | vs full |\n|---|---|---|---|---|")
for k in its:
    med = np.median(res[k])
    print(f"| {k} | {its[k][1]} | {med:.3f} | {min(res[k]):.3f} | {base - med:+.3f} ({(base - med) / base:+.0%}) |")
