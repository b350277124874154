"""``lkca-edge train``: build or load a model, fit it to the user's data, write checkpoint +
metrics.

The class count and label names come from the data. Starting from weights (``--pretrained`` or
``--checkpoint``), a data set with the model's own label names (in any order) keeps the head;
other labels, or another class count, get a fresh head, and the result says so. The checkpoint
records the data it was trained on (kind, absolute path, label names, split seed), so export,
validate, bench and profile default to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from lkca_edge.builder import create_model
from lkca_edge.checkpoints import save_checkpoint
from lkca_edge.data import load_dataset
from lkca_edge.datarecord import DataRecord
from lkca_edge.errors import UserError
from lkca_edge.fileio import ensure_dir, write_json
from lkca_edge.labels import match_labels
from lkca_edge.preprocessing import Preprocessing
from lkca_edge.train import TrainConfig, train
from lkca_edge.zoo import DIGITS_PREPROCESSING


@dataclass
class TrainOutcome:
    metrics: dict
    checkpoint: Path
    notes: list[str] = field(default_factory=list)


def _starting_model(name, checkpoint, pretrained, form, overrides):
    if checkpoint is not None and pretrained:
        raise UserError("give --pretrained or --checkpoint, not both")
    if checkpoint is not None:
        return create_model(name, checkpoint=checkpoint, form=form)
    if pretrained:
        return create_model(name, pretrained=True, form=form)
    return create_model(name, form=form, **{k: v for k, v in overrides.items() if k != "num_classes"})


def train_command(model_name: str | None, dataset: str, out: str | Path, cfg: TrainConfig,
                  checkpoint: str | None = None, pretrained: bool = False,
                  show_progress: bool = True, form: str | None = None,
                  **overrides) -> TrainOutcome:
    """Train ``model_name`` (fresh, ``pretrained`` or from ``checkpoint``) on ``dataset``."""
    cfg.check()
    notes: list[str] = []
    starting = checkpoint is not None or pretrained
    if starting and any(overrides.get(k) is not None for k in ("image_size", "patch_size")):
        raise UserError("--image-size/--patch-size do not fit existing weights; train from "
                        "scratch to change the input size")
    model = _starting_model(model_name, checkpoint, pretrained, form, overrides)
    if not starting:
        base = DIGITS_PREPROCESSING if dataset == "digits" else Preprocessing()
        model.preprocessing = Preprocessing.from_dict(
            {**base.to_dict(), "image_size": model.config.image_size, "labels": []})
    data = load_dataset(dataset, model.preprocessing)
    n = len(data.labels)
    wanted = overrides.get("num_classes")
    if wanted is not None and wanted != n:
        raise UserError(f"{data.name} has {n} classes ({', '.join(data.labels[:12])}); "
                        f"--num-classes {wanted} does not match it (drop the option: the class "
                        f"count comes from the data)")
    data, head_note = _fit_head(model, data, starting)
    if head_note:
        notes.append(head_note)
    labels = list(data.labels)
    model.preprocessing = Preprocessing.from_dict({**model.preprocessing.to_dict(), "labels": labels})
    out = ensure_dir(out)
    result = train(model, data, cfg, show_progress=show_progress)
    metrics = asdict(result)
    ckpt_path = Path(out) / f"{model.zoo_name}-{data.name.split(':')[0]}.pt"
    record = DataRecord(data.record.kind, data.record.path, tuple(labels), data.record.split_seed)
    save_checkpoint(model, ckpt_path, data=record, metrics={
        "test_accuracy": result.test_accuracy, "best_val_accuracy": result.best_val_accuracy,
        "epochs": cfg.epochs, "wall_seconds": result.wall_seconds})
    metrics.update(checkpoint=str(ckpt_path), data=record.to_dict(), notes=notes,
                   start=("checkpoint " + str(checkpoint)) if checkpoint else
                   ("shipped weights" if pretrained else "random initialisation"))
    write_json(Path(out) / "metrics.json", metrics)
    return TrainOutcome(metrics, ckpt_path, notes)


def _fit_head(model, data, starting: bool):
    """Keep the head when the data's labels are the model's (remapping their order), else a
    fresh head for the data's classes; (data with labels in the model's order, note)."""
    n = len(data.labels)
    if not starting:
        if model.config.num_classes != n:
            model.replace_head(n)
        return data, ""
    own = list(model.preprocessing.labels)
    if own and len(own) == n and set(own) == set(data.labels):
        match = match_labels(own, data.labels, n, data.name, model.zoo_name)
        return data.relabelled(match, own), match.note
    before = (f"{model.config.num_classes} classes" +
              (f": {', '.join(own[:10])}{'...' if len(own) > 10 else ''}" if own else ""))
    model.replace_head(n)
    return data, (f"head re-initialised for the data's {n} classes ({', '.join(data.labels[:10])}"
                  f"{'...' if n > 10 else ''}); the starting weights had {before}")
