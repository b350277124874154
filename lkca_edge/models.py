"""LKCA and softmax-ViT networks, with the LKCA operator in interchangeable forms.

LKCA's attention is one large convolution: V = Linear(x); each channel's g x g token grid of V
is cross-correlated with ONE shared (2g-1) x (2g-1) kernel (padding g-1); then an output Linear.
The same operator is a fixed g^2 x g^2 token-mixing matrix T times V, so it can be applied as:

- ``conv``          the paper's form: ``F.conv2d`` with the shared kernel;
- ``toeplitz``      T gathered from the kernel inside the graph, then ``T @ V``;
- ``frozen``        T computed once and stored as a constant, then ``T @ V``;
- ``frozen-linear`` the same constant applied as a Linear over the token axis,
                    ``F.linear(V^T, T)^T``: int8 backends want the constant operand on the right.
- ``fused``         the deployment form of ``frozen-linear``: T and the two channel Linears
                    commute, so T is applied first and ``to_out(to_v(.))`` becomes ONE Linear;
                    every LayerNorm's scale and shift is folded into the Linear after it. The
                    same function (fp32 rounding apart) with 15 % fewer multiply-accumulates in
                    lkca-1m, fewer graph ops and ~16 % smaller artifacts (``FusedTransformer``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lkca_edge.errors import UserError
from lkca_edge.forms import LKCA_FORMS
from lkca_edge.models_config import ModelConfig, count_macs


def kernel_index(grid: int) -> torch.Tensor:
    """Index into the flattened (2g-1)^2 kernel for every (output token, input token) pair.

    out[i, j] = sum_{a, b} K[a - i + g - 1, b - j + g - 1] * V[a, b]  (cross-correlation, pad g-1)
    """
    g = grid
    pos = torch.arange(g)
    offset = pos[None, :] - pos[:, None] + g - 1  # [output, input] -> kernel row/col
    rows = offset[:, None, :, None]  # (i, 1, a, 1)
    cols = offset[None, :, None, :]  # (1, j, 1, b)
    index = rows * (2 * g - 1) + cols  # (i, j, a, b)
    return index.reshape(g * g, g * g)


def token_mixing_matrix(kernel: torch.Tensor, grid: int) -> torch.Tensor:
    """The g^2 x g^2 Toeplitz matrix T with T @ V == conv2d(V grid, kernel, padding=g-1)."""
    return kernel.reshape(-1)[kernel_index(grid).to(kernel.device)]


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, tokens, p1*p2*C), patches flattened in (p1 p2 c) order."""
    n, ch, hgt, wid = images.shape
    p = patch_size
    x = images.reshape(n, ch, hgt // p, p, wid // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # n, h, w, p1, p2, c
    return x.reshape(n, (hgt // p) * (wid // p), p * p * ch)


class LargeKernelMixer(nn.Module):
    """LKCA token mixer: V = Linear(x), V mixed by one shared large kernel, then Linear."""

    def __init__(self, dim: int, grid: int, form: str = "conv"):
        super().__init__()
        self.grid = grid
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.kernel = nn.Parameter(torch.zeros(1, 1, 2 * grid - 1, 2 * grid - 1))
        self.to_out = nn.Linear(dim, dim)
        self.register_buffer("_kernel_index", kernel_index(grid), persistent=False)
        self.register_buffer("frozen_matrix", torch.empty(0), persistent=False)
        self.form = "conv"
        self.set_form(form)

    def set_form(self, form: str) -> None:
        if form not in LKCA_FORMS:
            raise ValueError(f"unknown LKCA form {form!r}; valid: {', '.join(LKCA_FORMS)}")
        self.form = form
        if form.startswith("frozen") or form == "fused":
            with torch.no_grad():
                self.frozen_matrix = token_mixing_matrix(self.kernel.detach(), self.grid).clone()
        else:
            self.frozen_matrix = torch.empty(0, device=self.kernel.device)

    def mix_tokens(self, v: torch.Tensor) -> torch.Tensor:
        b, n, d = v.shape
        g = self.grid
        if self.form == "conv":
            grid = v.transpose(1, 2).reshape(b * d, 1, g, g)
            mixed = F.conv2d(grid, self.kernel, padding=g - 1)
            return mixed.reshape(b, d, n).transpose(1, 2)
        if self.form == "toeplitz":
            return self.kernel.reshape(-1)[self._kernel_index] @ v
        if self.form == "frozen":
            return self.frozen_matrix @ v
        return F.linear(v.transpose(1, 2), self.frozen_matrix).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out(self.mix_tokens(self.to_v(x)))


class SoftmaxAttention(nn.Module):
    """Multi-head softmax self-attention (the ViT baseline), head dim = dim / heads."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        qkv = self.to_qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (d // h) ** -0.5, dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TokenMean(nn.Module):
    """Mean over the token axis: (N, tokens, D) -> (N, D). A module so converters can swap it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class Block(nn.Module):
    """Pre-norm transformer block: x + mixer(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, mixer: nn.Module, dim: int, hidden: int):
        super().__init__()
        self.mixer_norm = nn.LayerNorm(dim)
        self.mixer = mixer
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class VisionTransformer(nn.Module):
    """Patch embedding, learned positions (no class token), blocks, mean-pool, LN, Linear head."""

    def __init__(self, config: ModelConfig, form: str | None = None):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.patch_embed = nn.Linear(c.patch_dim, c.dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, c.num_tokens, c.dim) * 0.02)
        hidden = c.dim * c.mlp_ratio
        if c.family == "lkca":
            mixers = [LargeKernelMixer(c.dim, c.grid, form or "conv") for _ in range(c.depth)]
        else:
            if form is not None:
                raise ValueError("form applies only to LKCA models; ViT baselines have no form")
            mixers = [SoftmaxAttention(c.dim, c.heads) for _ in range(c.depth)]
        self.blocks = nn.ModuleList(Block(m, c.dim, hidden) for m in mixers)
        self.pool = TokenMean()
        self.head_norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)
        object.__setattr__(self, "_fused", None)
        self._init_weights()
        if form == "fused":
            self.set_form(form)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, LargeKernelMixer):
                # Small and centred on zero: the residual path carries the tokens at first
                # (uniform-averaging init washes out position and trains slower).
                nn.init.trunc_normal_(m.kernel, std=0.02)
                m.set_form(m.form)

    @property
    def form(self) -> str | None:
        mixers = self.lkca_mixers()
        return mixers[0].form if mixers else None

    def train(self, mode: bool = True) -> "VisionTransformer":
        if mode and self._fused is not None:
            raise RuntimeError("form 'fused' is an inference snapshot; set another form to train")
        return super().train(mode)

    def lkca_mixers(self) -> list[LargeKernelMixer]:
        return [b.mixer for b in self.blocks if isinstance(b.mixer, LargeKernelMixer)]

    def set_form(self, form: str) -> "VisionTransformer":
        """Switch every LKCA mixer to ``form``. Frozen forms recompute T from the kernels and
        ``fused`` rebuilds its fused network from the current weights: both are snapshots, so
        call ``set_form`` again after changing weights."""
        mixers = self.lkca_mixers()
        if not mixers:
            raise ValueError("form applies only to LKCA models; ViT baselines have no form")
        for m in mixers:
            m.set_form(form)
        # Kept out of the module tree (no parameters, no state_dict entries): derived data.
        object.__setattr__(self, "_fused", FusedTransformer(self) if form == "fused" else None)
        return self

    def replace_head(self, num_classes: int) -> "VisionTransformer":
        """A fresh classifier head for ``num_classes`` (transfer learning); everything before it
        keeps its weights. Seeded like construction, so a fine-tune repeats exactly."""
        from dataclasses import replace

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            head = nn.Linear(self.config.dim, num_classes)
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        self.head = head.to(self.pos_embedding.device)
        self.config = replace(self.config, num_classes=num_classes)
        if self._fused is not None:
            self.set_form("fused")
        return self

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(images, self.config.patch_size)

    def export_module(self) -> nn.Module:
        """The module converters trace: the compact fused network in form ``fused``, else self."""
        return self._fused if self._fused is not None else self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._fused is not None:
            return self._fused(images)
        x = self.patch_embed(self.patchify(images)) + self.pos_embedding
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_norm(self.pool(x)))  # as the paper: mean, then LN, then Linear

    def macs(self) -> int:
        return count_macs(self.config)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def layer_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers a per-layer comparison names, in execution order, with the modules whose output
    each one is: ``patch_embed`` (before the positions are added), then per block
    ``blocks.{i}.mixer`` and ``blocks.{i}.mlp`` (the two residual branches) and ``blocks.{i}`` (the
    block's output), then ``head`` (the logits). The fused network has the same names."""
    out: list[tuple[str, nn.Module]] = [("patch_embed", net.patch_embed)]
    for i, block in enumerate(net.blocks):
        out += [(f"blocks.{i}.mixer", block.mixer), (f"blocks.{i}.mlp", block.mlp),
                (f"blocks.{i}", block)]
    return out + [("head", net.head)]


def build_model(name: str, config: ModelConfig, preprocessing,
                form: str | None = None) -> VisionTransformer:
    """An untrained network with its zoo name and preprocessing attached, in eval mode."""
    if config.family == "vit" and form is not None:
        raise UserError(f"{name} is a softmax-attention ViT; --form applies only to LKCA models")
    try:
        # Initial weights are a function of the config alone (seed 0), so an untrained model
        # and a seeded training run repeat exactly; the caller's global RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = VisionTransformer(config, form=form)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    model.zoo_name = name
    model.preprocessing = preprocessing
    model.checkpoint_info = {}
    return model.eval()


# -- the fused deployment form ----------------------------------------------------------------
def _norm_affine(norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    d = norm.normalized_shape[0]
    weight = norm.weight if norm.weight is not None else torch.ones(d)
    bias = norm.bias if norm.bias is not None else torch.zeros(d)
    return weight.detach(), bias.detach()


def _plain_norm(norm: nn.LayerNorm) -> nn.LayerNorm:
    return nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    return layer


def _fold_norm(norm: nn.LayerNorm, linear: nn.Linear) -> nn.Linear:
    """Linear(LN(x)) as Linear'(LN_without_affine(x)): W' = W diag(gamma), b' = W beta + b."""
    gamma, beta = _norm_affine(norm)
    w = linear.weight.detach()
    bias = w @ beta + (linear.bias.detach() if linear.bias is not None else 0)
    return _linear(w * gamma[None, :], bias)


class FusedMixer(nn.Module):
    """``blocks.{i}.mixer`` of the fused form: ``to_out(T @ to_v(gamma * xhat + beta))`` as ONE
    Linear after T (see ``FusedBlock``); ``xhat`` is the affine-free LayerNorm's output."""

    def __init__(self, scale: torch.Tensor | None, shift: torch.Tensor, matrix: torch.Tensor,
                 proj: nn.Linear):
        super().__init__()
        self.register_buffer("scale", None if scale is None else scale.clone())
        self.register_buffer("shift", shift.clone())
        self.register_buffer("token_mixing_matrix", matrix.clone())
        self.proj = proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            h = h * self.scale
        h = h + self.shift
        mixed = F.linear(h.transpose(1, 2), self.token_mixing_matrix).transpose(1, 2)
        return self.proj(mixed)


class FusedBlock(nn.Module):
    """A trained ``Block`` rewritten for inference; the same function and the same module names
    (``mixer_norm``, ``mixer``, ``mlp_norm``, ``mlp``), so every layer of an artifact is named
    as in the source model.

    ``to_out(T @ to_v(gamma * xhat + beta))`` with ``xhat`` the affine-free LayerNorm: T mixes
    tokens and ``W_out W_v`` mixes channels, so they commute and the two Linears become one,
    ``P = W_out W_v diag(gamma)``, applied to ``T @ (xhat + beta / gamma)`` (the shift stays a
    per-channel vector; folded after T it would be a per-token constant, since border tokens see
    fewer kernel taps). Where some |gamma| is tiny next to the others, dividing by it would
    blow up the shift's range (int8 activations lose resolution), so the scale stays unfolded.
    The MLP's LayerNorm scale and shift fold into fc1.
    """

    SCALE_FOLD_MIN_RATIO = 0.05  # fold gamma only if min|gamma| >= this * max|gamma|

    def __init__(self, block: Block):
        super().__init__()
        mixer = block.mixer
        t = token_mixing_matrix(mixer.kernel.detach(), mixer.grid)
        merged = mixer.to_out.weight.detach() @ mixer.to_v.weight.detach()
        gamma, beta = _norm_affine(block.mixer_norm)
        self.mixer_norm = _plain_norm(block.mixer_norm)
        fold = bool(gamma.abs().min() >= self.SCALE_FOLD_MIN_RATIO * gamma.abs().max() > 0)
        self.mixer = FusedMixer(None if fold else gamma, beta / gamma if fold else beta, t,
                                _linear(merged * gamma[None, :] if fold else merged,
                                        mixer.to_out.bias.detach()))
        self.mlp_norm = _plain_norm(block.mlp_norm)
        self.mlp = MLP(block.mlp.fc1.in_features, block.mlp.fc1.out_features)
        self.mlp.fc1 = _fold_norm(block.mlp_norm, block.mlp.fc1)
        self.mlp.fc2 = copy.deepcopy(block.mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class FusedTransformer(nn.Module):
    """The whole LKCA network in form ``fused`` (built from trained weights; inference only)."""

    def __init__(self, model: "VisionTransformer"):
        super().__init__()
        self.config = model.config
        object.__setattr__(self, "_source", model)  # for zoo_name and preprocessing, not a child
        with torch.no_grad():
            self.patch_embed = copy.deepcopy(model.patch_embed)
            self.register_buffer("pos_embedding", model.pos_embedding.detach().clone())
            self.blocks = nn.ModuleList(FusedBlock(b) for b in model.blocks)
            self.pool = TokenMean()
            self.head_norm = _plain_norm(model.head_norm)
            self.head = _fold_norm(model.head_norm, model.head)
        self.to(model.pos_embedding.device)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def zoo_name(self) -> str:
        return self._source.zoo_name

    @property
    def preprocessing(self):
        return self._source.preprocessing

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(patchify(images, self.config.patch_size)) + self.pos_embedding
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_norm(self.pool(x)))

    def macs(self) -> int:
        """Multiply-accumulates this network executes (the merged Linear saves one per block)."""
        return count_macs(self.config, "fused")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
