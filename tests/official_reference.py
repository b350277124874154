"""An independent re-implementation of the paper's official LKCA/ViT modules, with the official
trainer's parameter names (vit-pytorch layout), used only to produce official-format checkpoints
and reference logits in tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return self.net(x)


class LargeKernelAttention(nn.Module):
    def __init__(self, dim, grid):
        super().__init__()
        self.grid = grid
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.dynamicqk = nn.Parameter(torch.randn(1, 1, 2 * grid - 1, 2 * grid - 1) * 0.1)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        b, n, d = x.shape
        v = self.to_v(x)
        # b (h w) d -> (b d) 1 h w
        grid = v.permute(0, 2, 1).reshape(b * d, 1, self.grid, self.grid)
        out = F.conv2d(grid, self.dynamicqk, padding=self.grid - 1)
        out = out.reshape(b, d, n).permute(0, 2, 1)
        return self.to_out(out)


class SoftmaxAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, d))


class Transformer(nn.Module):
    def __init__(self, dim, depth, hidden, make_mixer):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, make_mixer()), PreNorm(dim, FeedForward(dim, hidden))])
            for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class OfficialViT(nn.Module):
    def __init__(self, family, image_size=32, patch_size=4, dim=100, depth=2, heads=1, mlp_ratio=2,
                 num_classes=10, channels=3, cls_slot=True):
        super().__init__()
        grid = image_size // patch_size
        self.patch = patch_size
        self.to_patch_embedding = nn.Sequential(nn.Identity(), nn.Linear(channels * patch_size**2, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, grid * grid + int(cls_slot), dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        mixer = (lambda: LargeKernelAttention(dim, grid)) if family == "lkca" else (lambda: SoftmaxAttention(dim, heads))
        self.transformer = Transformer(dim, depth, dim * mlp_ratio, mixer)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img):
        b, c, h, w = img.shape
        p = self.patch
        # b c (h p1) (w p2) -> b (h w) (p1 p2 c)
        x = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        x = self.to_patch_embedding(x)
        n = x.shape[1]
        x = x + self.pos_embedding[:, :n]
        x = self.transformer(x)
        return self.mlp_head(x.mean(dim=1))
