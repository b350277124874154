"""CPU training and fine-tuning on small datasets (the paper's setting: little data, little compute)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lkca_edge.data import Dataset
from lkca_edge.errors import UserError
from lkca_edge.evaluation import evaluate
from lkca_edge.progress import progress


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    max_shift: int = 2  # random translation in pixels (augmentation)
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        """One line for a setting that cannot train (before any work is done)."""
        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not integer(self.epochs) or self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if not integer(self.batch_size) or self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"--lr must be a finite number above 0, got {self.lr}")
        if not integer(self.seed) or self.seed < 0:
            raise UserError(f"--seed must be 0 or more, got {self.seed}")
        if self.threads is not None and (not integer(self.threads) or self.threads < 1):
            raise UserError(f"--threads must be at least 1, got {self.threads}")


class TrainingDiverged(UserError):
    """The loss became NaN or Inf: training stops and no checkpoint is written."""


@dataclass
class TrainResult:
    model: str
    dataset: str
    epochs: list[dict] = field(default_factory=list)
    test_accuracy: float = float("nan")
    best_val_accuracy: float = float("nan")
    wall_seconds: float = 0.0
    config: dict = field(default_factory=dict)


def _shift(batch: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return batch
    n, _, h, w = batch.shape
    padded = F.pad(batch, [max_shift] * 4, mode="replicate")
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


def train(model: torch.nn.Module, data: Dataset, cfg: TrainConfig, show_progress: bool = True) -> TrainResult:
    """Train ``model`` in place with AdamW + warm-up/cosine; keep the best-val weights. Stops
    with ``TrainingDiverged`` at the first non-finite loss (the model is then left as it was)."""
    cfg.check()
    if len(data.train_x) == 0:
        raise UserError(f"{data.name} has no training images")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    form = getattr(model, "form", None)
    if form is not None:
        # Same function as every other form, and its backward (a matmul and a scatter-add into
        # the kernel) is far faster on CPU than conv2d's with one input channel.
        model.set_form("toeplitz")
    x = torch.from_numpy(data.train_x)
    y = torch.from_numpy(data.train_y)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / max(1, warmup) if s < warmup
                                              else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    result = TrainResult(model=getattr(model, "zoo_name", "?"), dataset=data.name, config=asdict(cfg))
    best_val, best_state = -1.0, None
    start = time.perf_counter()
    with progress(total=total, description=f"train {result.model}", enabled=show_progress) as bar:
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            losses = []
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                logits = model(_shift(x[idx], cfg.max_shift, gen))
                loss = F.cross_entropy(logits, y[idx], label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    model.load_state_dict(initial)
                    if form is not None:
                        model.set_form(form)
                    model.eval()
                    raise TrainingDiverged(
                        f"training stopped at epoch {epoch + 1}, step {i // cfg.batch_size + 1}: "
                        f"the loss is {loss.item()} (lr {cfg.lr:g}); no checkpoint written")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                bar.advance()
            val_acc = evaluate(model, data.val_x, data.val_y)
            result.epochs.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                  "val_accuracy": val_acc})
            bar.describe(f"train {result.model} epoch {epoch + 1} loss {np.mean(losses):.3f} val {val_acc:.3f}")
            if val_acc >= best_val:
                best_val = val_acc
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    bad = next((k for k, v in model.state_dict().items()
                if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        model.load_state_dict(initial)
        raise TrainingDiverged(f"training ended with non-finite weights ({bad}; lr {cfg.lr:g}); "
                               f"no checkpoint written")
    if form is not None:
        model.set_form(form)
    model.eval()
    result.best_val_accuracy = best_val
    result.test_accuracy = evaluate(model, data.test_x, data.test_y)
    result.wall_seconds = time.perf_counter() - start
    return result
