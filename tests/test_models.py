"""The LKCA operator forms agree, the zoo is what the paper lists, checkpoints load safely."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lkca_edge import create_model
from lkca_edge.errors import UserError
from lkca_edge.models import FusedTransformer, LargeKernelMixer, token_mixing_matrix
from lkca_edge.models_config import count_macs
from lkca_edge.zoo import get_spec, list_models

LKCA = [s.name for s in list_models() if s.family == "lkca"]
FORMS = ("conv", "toeplitz", "frozen", "frozen-linear", "fused")


def _randomize_kernels(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.lkca_mixers():
            m.kernel.copy_(torch.randn(m.kernel.shape, generator=g) * 0.2)
    return model


@pytest.mark.parametrize("name", LKCA)
@pytest.mark.parametrize("size", [32, 64])
def test_forms_agree_on_every_lkca_config(name, size):
    torch.manual_seed(0)
    model = _randomize_kernels(create_model(name, image_size=size))
    assert model.config.patch_size == size // 8
    for batch in (1, 4):
        x = torch.randn(batch, 3, size, size)
        outs = {}
        with torch.no_grad():
            for form in FORMS:
                outs[form] = model.set_form(form)(x)
        scale = outs["conv"].abs().max().item()
        assert scale > 1e-3  # the comparison is not between zeros
        for form in FORMS[1:]:
            err = (outs[form] - outs["conv"]).abs().max().item()
            assert err <= 1e-5, (name, size, batch, form, err)


def _randomize_everything(model, seed=0):
    """Non-trivial LayerNorm scales/shifts and biases (fresh ones are 1, 0, 0: folding them
    would be tested on identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return _randomize_kernels(model, seed)


@pytest.mark.parametrize("name,size", [("lkca-1m", 32), ("lkca-base", 32), ("lkca-0.5m", 64)])
def test_fused_form_is_the_same_function_with_fewer_macs(name, size):
    model = _randomize_everything(create_model(name, image_size=size))
    with torch.no_grad():
        # one tiny LayerNorm scale: that block keeps its scale unfolded (no shift / gamma blow-up)
        model.blocks[1].mixer_norm.weight[5] = 1e-4
        x = torch.randn(3, 3, size, size)
        ref = model.set_form("conv")(x)
        state_keys = sorted(model.state_dict())
        fused = model.set_form("fused")
        out = fused(x)
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    assert sorted(model.state_dict()) == state_keys  # derived data only: checkpoints unchanged
    net = model.export_module()
    assert isinstance(net, FusedTransformer) and net.zoo_name == name
    assert net.blocks[1].mixer.scale is not None and net.blocks[0].mixer.scale is None
    c = model.config
    assert net.macs() == count_macs(c) - c.depth * c.num_tokens * c.dim * c.dim < model.macs()
    # merged projection: one dim x dim weight per block instead of two
    assert net.num_params() == model.num_params() - c.depth * (c.dim * c.dim + (2 * c.grid - 1) ** 2
                                                               + 4 * c.dim) - 2 * c.dim \
        - c.num_tokens * c.dim
    with pytest.raises(RuntimeError, match="inference snapshot"):
        model.train()
    assert model.set_form("conv").export_module() is model


def test_fused_form_is_a_snapshot_rebuilt_by_set_form():
    model = _randomize_everything(create_model("lkca-0.5m"), seed=2).set_form("fused")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        model.head.bias.add_(1.0)
        assert torch.equal(model(x), before)  # the snapshot does not see the change...
        model.set_form("fused")
        assert torch.allclose(model(x), before + 1.0, atol=1e-5)  # ...until it is rebuilt
        assert torch.allclose(model(x), model.set_form("conv")(x), atol=1e-5)


def test_token_mixing_matrix_is_the_convolution():
    """Brute force: T[(i,j),(a,b)] = K[a-i+g-1, b-j+g-1], the cross-correlation with pad g-1."""
    g = 5
    kernel = torch.randn(1, 1, 2 * g - 1, 2 * g - 1)
    t = token_mixing_matrix(kernel, g)
    for (i, j, a, b) in [(0, 0, 0, 0), (0, 0, 4, 4), (4, 4, 0, 0), (2, 3, 1, 0), (1, 4, 3, 2)]:
        assert t[i * g + j, a * g + b] == kernel[0, 0, a - i + g - 1, b - j + g - 1]
    mixer = LargeKernelMixer(dim=3, grid=g)
    with torch.no_grad():
        mixer.kernel.copy_(kernel)
    v = torch.randn(2, g * g, 3)
    conv = torch.nn.functional.conv2d(v.transpose(1, 2).reshape(6, 1, g, g), kernel, padding=g - 1)
    assert torch.allclose(t @ v, conv.reshape(2, 3, g * g).transpose(1, 2), atol=1e-5)


def test_frozen_matrix_follows_kernel_updates():
    model = _randomize_kernels(create_model("lkca-0.5m"))
    model.set_form("frozen")
    x = torch.randn(1, 3, 32, 32)
    before = model(x)
    _randomize_kernels(model, seed=1)
    model.set_form("frozen")  # re-freezing picks up the new kernels
    after = model(x)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, model.set_form("conv")(x), atol=1e-5)


def test_zoo_sizes_and_aliases():
    params = {s.name: s.summary()["params"] for s in list_models()}
    # Each name's size class holds (within 25 %).
    expected = {"lkca-0.5m": 0.5e6, "lkca-1m": 1e6, "lkca-2m": 2e6, "lkca-4m": 4e6, "lkca-8m": 8e6,
                "lkca-12m": 12e6, "vit-0.5m": 0.5e6, "vit-1m": 1e6, "vit-2m": 2e6, "vit-4m": 4e6,
                "vit-8m": 8e6}
    for name, n in expected.items():
        assert abs(params[name] - n) / n < 0.25, (name, params[name])
    assert get_spec("lkca-t").name == "lkca-1m"
    assert get_spec("LKCA-B").name == "lkca-base"
    assert get_spec("lkca-l").name == "lkca-12m"
    for spec in list_models():
        model = create_model(spec.name)
        assert model.num_params() == spec.summary()["params"]


def test_unknown_model_suggests_close_names():
    with pytest.raises(UserError, match="did you mean: lkca-1m"):
        get_spec("lkca-1n")


def test_create_model_io_contract():
    model = create_model("vit-0.5m", num_classes=7, image_size=64)
    assert not model.training
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and out.dtype == torch.float32
    with pytest.raises(UserError, match="only to LKCA"):
        create_model("vit-1m", form="frozen")
    with pytest.raises(UserError, match="not a multiple"):
        create_model("lkca-1m", image_size=30, patch_size=4)


# -- checkpoints --------------------------------------------------------------------------------

def _official(family, cls_slot, **kw):
    from tests.official_reference import OfficialViT

    torch.manual_seed(0)
    return OfficialViT(family, cls_slot=cls_slot, **kw).eval()


@pytest.mark.parametrize("cls_slot", [True, False])
@pytest.mark.parametrize("wrap", ["plain", "model", "module-prefix"])
def test_official_lkca_checkpoint_loads_and_matches(tmp_path, cls_slot, wrap):
    ref = _official("lkca", cls_slot, dim=100, depth=8)  # lkca-0.5m
    state = ref.state_dict()
    if wrap == "model":
        state = {"model": state, "epoch": 3, "acc": 81.5}
    elif wrap == "module-prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    path = tmp_path / "official.pth"
    torch.save(state, path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
        for form in FORMS:
            got = create_model("lkca-0.5m", checkpoint=path, form=form)(x)
            assert (got - expected).abs().max().item() < 1e-4, form


def test_official_vit_checkpoint_loads_and_matches(tmp_path):
    ref = _official("vit", True, dim=120, depth=4, heads=4)  # vit-0.5m
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (create_model("vit-0.5m", checkpoint=path)(x) - ref(x)).abs().max() < 1e-4


def test_checkpoint_for_another_config_names_the_tensor(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(_official("lkca", True, dim=100, depth=8).state_dict(), path)
    with pytest.raises(UserError) as e:
        create_model("lkca-1m", checkpoint=path)
    msg = str(e.value)
    # the checkpoint loads with its own architecture, which is not the one named
    assert "dim 100, depth 8" in msg and "(lkca-0.5m)" in msg and "not lkca-1m (dim 136, depth 9)" in msg
    assert create_model(None, checkpoint=path).config.dim == 100


def test_own_checkpoint_roundtrip_carries_preprocessing(tmp_path, lkca1m):
    from lkca_edge.checkpoints import read_checkpoint, save_checkpoint

    path = save_checkpoint(lkca1m, tmp_path / "m.pt", data=lkca1m.data_record,
                           metrics={"test_accuracy": 1.0})
    ckpt = read_checkpoint(path)
    assert ckpt["preprocessing"] == lkca1m.preprocessing
    assert ckpt["preprocessing"].labels == tuple(str(i) for i in range(10))
    assert lkca1m.form == "conv"  # exports work on copies: the session's model is never changed
    again = create_model("lkca-1m", checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 lkca1m.state_dict().values()))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), lkca1m(x))
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_checkpoint_files_are_one_clear_error(tmp_path, lkca1m, content):
    from lkca_edge.checkpoints import save_checkpoint

    path = tmp_path / "bad.pt"
    if content is None:  # truncated real checkpoint
        good = save_checkpoint(lkca1m, tmp_path / "good.pt").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        create_model("lkca-1m", checkpoint=path)
    with pytest.raises(UserError, match="not found"):
        create_model("lkca-1m", checkpoint=tmp_path / "missing.pt")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/lkca_edge_pwned_by_checkpoint",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    import os

    marker = "/tmp/lkca_edge_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Exploit()}, path, pickle_module=pickle)
    with pytest.raises(UserError, match="refused for safety|not a readable checkpoint"):
        create_model("lkca-1m", checkpoint=path)
    assert not os.path.exists(marker)


def test_shipped_weights_are_trained(lkca1m, digits):
    from lkca_edge.evaluation import evaluate

    accuracy = evaluate(lkca1m, digits.test_x, digits.test_y)
    assert accuracy >= 0.95
    # The zoo's metadata states what the weights really score.
    assert get_spec("lkca-1m").get_weights("digits").test_accuracy == pytest.approx(accuracy, abs=5e-4)
    assert lkca1m.preprocessing == get_spec("lkca-1m").get_weights("digits").preprocessing


@pytest.mark.slow
def test_export_model_never_changes_the_callers_model(tmp_path, lkca1m, digits):
    """export_model picks the fused form for its copy; the model passed in keeps its form and
    weights."""
    from lkca_edge.pipelines.export import ExportRequest, export_model

    before = {k: v.clone() for k, v in lkca1m.state_dict().items()}
    req = ExportRequest(model="lkca-1m", backend="onnx", precision="fp32", out=str(tmp_path),
                        validation_limit=8)
    result = export_model(req, model=lkca1m, dataset=digits)
    assert result.manifest.form == "fused"
    assert lkca1m.form == "conv" and lkca1m.export_module() is lkca1m
    assert all(torch.equal(before[k], v) for k, v in lkca1m.state_dict().items())
