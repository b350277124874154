"""ExecuTorch/XNNPACK backend: real .pte exports of the digits-trained lkca-1m, run in the
ExecuTorch runtime and gated against the torch source; delegation coverage read from the graph."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lkca_edge.converters import get_backend
from lkca_edge import create_model
from lkca_edge.errors import UserError


pytestmark = pytest.mark.slow


@pytest.fixture
def exports(exported):
    """lkca-1m exported once per precision (the session cache)."""
    return lambda precision: exported("executorch", precision)


def _check_delegation(details: dict, depth: int) -> None:
    """Delegation counts come from the lowered graph; the .pte's own kernel list must agree."""
    assert details["delegated"]["aten.linear"] > 0 and "aten.linear" not in details["not_delegated"]
    # Every LayerNorm (2 per block + the final one, rewritten as 4-D means, sub, mul, rsqrt)
    # and the token mean run inside XNNPACK: nothing is left to portable kernels.
    assert details["not_delegated"] == {}
    assert details["delegated"]["aten.rsqrt"] > 0 and details["delegated"]["aten.mean.dim"] > 0
    pte = details["pte"]
    assert pte["kernel_calls"] == {}
    assert pte["delegate_calls"] == details["delegate_subgraphs"]
    subgraphs = details["delegate_subgraphs"]["XnnpackBackend"]
    assert subgraphs >= 1 and pte["op_counts"]["delegate:XnnpackBackend"] == subgraphs
    # forward, and the constant methods apps read labels and preprocessing from
    assert pte["methods"] == ["forward", "input_kind", "labels", "preprocessing"]
    assert pte["planned_memory_bytes"] > 0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_lkca1m_exports_pass_their_gates(exports, lkca1m, digits, precision):
    res = exports(precision)
    v = res.manifest.validation
    assert v["runnable"] and v["passed"], v
    assert v["n_images"] == len(digits.test_x)
    if precision == "fp32":
        assert v["max_abs_err"] <= 1e-4
        stored = res.manifest.details["pte"]["weight_bytes"]
        # what was traced: the fused network's tensors, fp32 (export worked on its own copy)
        net = copy.deepcopy(lkca1m).set_form("fused").export_module()
        floats = sum(t.numel() for t in (*net.parameters(), *net.buffers()) if t.is_floating_point())
        assert 0.9 < stored / (4 * floats) < 1.1, stored
    else:
        assert v["reference_accuracy"] - v["accuracy"] <= 0.01 and v["top1_agreement"] >= 0.98
        assert res.manifest.size_bytes < 0.4 * (4 * lkca1m.num_params())  # int8 weights
    m = json.loads(res.manifest_path.read_text())
    assert m["backend"] == "executorch" and m["artifact"].endswith(".pte")
    assert m["form"] == "fused" and m["recipe"]["name"] == precision
    assert m["inputs"][0]["shape"] == [1, 3, 32, 32] and m["outputs"][0]["shape"] == [1, 10]
    assert m["tool_versions"]["executorch"] and m["sha256"]
    _check_delegation(m["details"], lkca1m.config.depth)
    if precision == "int8":
        assert m["calibration"] == {"dataset": "digits", "split": "train", "size": 128}
        assert m["details"]["delegated"]["quantized_decomposed.quantize_per_tensor"] > 0


def test_runner_facts(exports, digits):
    res = exports("fp32")
    runner = get_backend("executorch").load(res.artifact, threads=1)
    out = runner(digits.test_x[:1])
    assert out.dtype == np.float32 and out.shape == (1, 10)
    assert runner.planned_memory_bytes() == res.manifest.details["pte"]["planned_memory_bytes"]
    c = res.manifest.config
    ops = runner.operator_profile(digits.test_x[:1], runs=3,
                                  dims=(c["depth"], (c["image_size"] // c["patch_size"]) ** 2, c["dim"]))
    # ETDump: XNNPACK's own operators, every one inside the delegate, charged to source layers
    assert "event tracer compiled in" in runner.ops_note
    assert ops and all(o["delegated"] is True and o["total_ms"] >= 0 for o in ops)
    gemm = [o for o in ops if o["type"].startswith("Fully Connected")]
    assert sum(o["count"] for o in gemm) == 1 + 4 * c["depth"] + 1  # fused: T, proj, fc1, fc2
    assert {o["module"] for o in gemm} == {"patch_embed", "head"} | {
        f"blocks.{b}.{part}" for b in range(c["depth"]) for part in ("mixer", "mlp")}
    # the matrix products are most of an lkca-1m forward pass
    assert sum(o["total_ms"] for o in gemm) > 0.5 * sum(o["total_ms"] for o in ops)
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    assert _threadpool_get_thread_count() == 1


def test_64px_config_and_vit_baseline(tmp_path):
    """Untrained models through the backend: the .pte computes the torch function (fp32)."""
    backend = get_backend("executorch")
    for name, kw in (("lkca-0.5m", {"image_size": 64}), ("vit-0.5m", {})):
        model = create_model(name, **kw)
        if model.config.family == "lkca":
            model.set_form("frozen-linear")
        size = model.config.image_size
        x = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
        path = tmp_path / f"{name}.pte"
        result = backend.convert(model, x[:1], backend.recipe("fp32"), x, path)
        assert result.inputs[0]["shape"] == [1, 3, size, size]
        assert result.details["delegated"] and result.details["pte"]["delegate_calls"]
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = backend.load(path).run_many(x)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4, name


def _bad_bytes(kind: str, good: bytes) -> bytes:
    return {
        "random": np.random.default_rng(0).bytes(4096),   # aborted the runtime before the check
        "empty": b"",
        "truncated": good[:len(good) // 2],
        "corrupt-body": good[:8] + np.random.default_rng(1).bytes(4096),  # right identifier
    }[kind]


@pytest.mark.parametrize("kind", ["random", "empty", "truncated", "corrupt-body"])
def test_bad_pte_files_raise_user_error(tmp_path, exports, kind):
    good = exports("fp32").artifact.read_bytes()
    path = tmp_path / "bad.pte"
    path.write_bytes(_bad_bytes(kind, good))
    backend = get_backend("executorch")
    with pytest.raises(UserError) as err:
        backend.load(path)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        backend.inspect(path)


def test_recipes_and_light_import():
    backend = get_backend("xnnpack")
    assert backend.name == "executorch" and backend.extension == ".pte"
    assert backend.recipe("int8").name == "int8" and backend.recipe("int8").calibrated
    assert backend.recipe(recipe="int8-dynamic").option("mode") == "dynamic"
    assert set(backend.recipes) == {"fp32", "fp32-aten-norms", "int8", "int8-dynamic", "int8-mixed"}
    with pytest.raises(UserError):
        backend.recipe("fp16")
    code = "import sys, lkca_edge.converters.executorch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_without_the_norm_rewrite_layernorm_and_mean_fall_back(lkca1m, exported):
    """The 'before' of the rewrite: aten LayerNorm and the 3-D token mean stay outside XNNPACK."""
    res = exported("executorch", recipe="fp32-aten-norms")
    details = res.manifest.details
    depth = lkca1m.config.depth
    assert details["not_delegated"] == {"aten.native_layer_norm": 2 * depth + 1, "aten.mean.dim": 1}
    assert details["pte"]["kernel_calls"] == {"aten.native_layer_norm.out": 2 * depth + 1,
                                              "aten.mean.out": 1}
    assert res.manifest.validation["passed"]
