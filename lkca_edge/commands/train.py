"""Train or fine-tune a zoo model on the CPU; writes a checkpoint (with its preprocessing) and
metrics.json (per-epoch loss and val accuracy, test accuracy, wall time)."""

from __future__ import annotations

from lkca_edge.commands.common import add_dataset_argument, add_model_arguments, model_overrides

HELP = "train or fine-tune a model on a small dataset (CPU)"


def add_arguments(p) -> None:
    p.add_argument("model", help="zoo name, e.g. lkca-1m (see `lkca-edge zoo`)")
    add_dataset_argument(p)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--out", required=True, help="output directory")
    add_model_arguments(p, checkpoint_help="start from these weights (fine-tune)")


def run(args) -> int:
    from lkca_edge.forms import check_form
    from lkca_edge.zoo import get_spec

    get_spec(args.model)
    if args.form:
        check_form(args.form)
    from lkca_edge.ranges import check_arg, check_optional

    for name in ("epochs", "batch_size", "lr", "seed"):
        check_arg(name, getattr(args, name))
    check_optional("threads", args.threads)
    from lkca_edge.commands.common import say
    from lkca_edge.pipelines.train import TrainConfig, train_command

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads)
    metrics = train_command(args.model, args.dataset, args.out, cfg, checkpoint=args.checkpoint,
                            form=args.form, **model_overrides(args))
    say(f"{metrics['model']} on {metrics['dataset']}: test accuracy {metrics['test_accuracy']:.2%}, "
          f"best val {metrics['best_val_accuracy']:.2%}, {metrics['wall_seconds']:.0f} s")
    say(f"checkpoint: {metrics['checkpoint']}")
    return 0
