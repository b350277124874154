"""Graph rewrites converters share: the same function in ops a runtime runs well.

``explicit_norms`` replaces every LayerNorm (and, for XNNPACK, the token mean) with plain ops:
litert-torch lowers ``aten.layer_norm`` to 12 ops where 7 do, and XNNPACK has no LayerNorm at all
and averages only the two innermost dims of a 4-D tensor. The rewritten modules are kept float
in int8 graphs (int8 statistics cost accuracy and buy no speed).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lkca_edge.models import TokenMean


class ExplicitLayerNorm(nn.Module):
    """LayerNorm over the last dim as mean, sub, mul, mean, add, rsqrt, mul (+ the affine).

    ``four_d``: the statistics are means over the two innermost dims of a (rows, 1, D, 1) view,
    the only means XNNPACK delegates."""

    def __init__(self, norm: nn.LayerNorm, four_d: bool = False):
        super().__init__()
        self.weight, self.bias, self.eps, self.four_d = norm.weight, norm.bias, norm.eps, four_d

    def forward(self, x):
        if self.four_d:
            y, dims = x.reshape(-1, 1, x.shape[-1], 1), (2, 3)
        else:
            y, dims = x, -1
        centred = y - y.mean(dim=dims, keepdim=True)
        normed = centred * torch.rsqrt((centred * centred).mean(dim=dims, keepdim=True) + self.eps)
        if self.four_d:
            normed = normed.reshape(x.shape)
        if self.weight is None:  # affine folded into the next Linear (form "fused")
            return normed
        return normed * self.weight + self.bias


class FourDTokenMean(nn.Module):
    """Mean over tokens as a 4-D mean over the two innermost dims: (N, T, D) -> (N, D, T, 1)."""

    def forward(self, x):
        return x.transpose(1, 2).unsqueeze(-1).mean(dim=(2, 3), keepdim=True).flatten(1)


def rewrite_modules(model, replace):
    """A deep copy of ``model`` (in eval mode) in which every submodule ``child`` with
    ``replace(child)`` not None is swapped for that result."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            new = replace(child)
            if new is not None:
                setattr(parent, name, new)
    return model.eval()


def explicit_norms(model, four_d: bool = False):
    """A copy of ``model`` with every 1-D LayerNorm written as plain ops (and, with ``four_d``,
    the token mean too, so XNNPACK delegates the whole graph), and the module types to keep
    float when quantizing."""

    def replace(child):
        if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) == 1:
            return ExplicitLayerNorm(child, four_d=four_d)
        if four_d and isinstance(child, TokenMean):
            return FourDTokenMean()
        return None

    keep_float = (ExplicitLayerNorm, FourDTokenMean) if four_d else (ExplicitLayerNorm,)
    return rewrite_modules(model, replace), keep_float


def qualified_name(cls: type) -> str:
    """'module.QualName': how torch.export records a module's type in ``nn_module_stack``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class FloatLayer(nn.Module):
    """Marks a layer that mixed precision keeps in float: quantizers are told to leave every op
    under a module of this type alone (``set_module_type(FloatLayer, None)``)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args):
        return self.layer(*args)


def keep_layers_float(model, names) -> tuple[nn.Module, tuple[type, ...]]:
    """``model`` with the submodules at the dotted paths ``names`` (the per-layer names:
    ``patch_embed``, ``blocks.3.mixer``, ``head``, ...) wrapped in ``FloatLayer``, and the module
    types to keep float. ``model`` itself is returned when ``names`` is empty."""
    names = list(names or ())
    if not names:
        return model, ()
    model = copy.deepcopy(model)
    known = dict(model.named_modules())
    for name in names:
        # the network may sit behind a wrapper (an image input's ImageInput.network)
        paths = [p for p in known if p and (p == name or p.endswith("." + name))]
        if len(paths) != 1:
            raise ValueError(f"no layer {name!r} to keep in float")
        name = paths[0]
        parent_name, _, child = name.rpartition(".")
        parent = known[parent_name] if parent_name else model
        setattr(parent, child, FloatLayer(getattr(parent, child)))
    return model.eval(), (FloatLayer,)
