"""``lkca-edge train``: build or load a model, train it on a data set, write checkpoint + metrics."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from lkca_edge.builder import create_model
from lkca_edge.checkpoints import save_checkpoint
from lkca_edge.data import load_dataset
from lkca_edge.errors import UserError
from lkca_edge.fileio import ensure_dir, write_json
from lkca_edge.train import TrainConfig, train
from lkca_edge.zoo import DIGITS_PREPROCESSING


def train_command(model_name: str, dataset: str, out: str | Path, cfg: TrainConfig,
                  checkpoint: str | None = None, show_progress: bool = True, **overrides) -> dict:
    """``lkca-edge train``: build (or resume from a checkpoint), train, write checkpoint + metrics."""
    model = create_model(model_name, checkpoint=checkpoint, **overrides)
    if checkpoint is None and dataset == "digits":
        model.preprocessing = DIGITS_PREPROCESSING.__class__.from_dict(
            {**DIGITS_PREPROCESSING.to_dict(), "image_size": model.config.image_size})
    data = load_dataset(dataset, model.preprocessing)
    if model.config.num_classes != len(data.labels):
        raise UserError(f"{model_name} has {model.config.num_classes} classes but {dataset} has "
                        f"{len(data.labels)}; pass --num-classes {len(data.labels)}")
    model.preprocessing = model.preprocessing.__class__.from_dict(
        {**model.preprocessing.to_dict(), "labels": list(data.labels)})
    out = ensure_dir(out)
    result = train(model, data, cfg, show_progress=show_progress)
    metrics = asdict(result)
    ckpt_path = Path(out) / f"{model.zoo_name}-{data.name.split(':')[0]}.pt"
    save_checkpoint(model, ckpt_path, dataset=dataset, metrics={
        "test_accuracy": result.test_accuracy, "best_val_accuracy": result.best_val_accuracy,
        "epochs": cfg.epochs, "wall_seconds": result.wall_seconds})
    metrics["checkpoint"] = str(ckpt_path)
    write_json(Path(out) / "metrics.json", metrics)
    return metrics
