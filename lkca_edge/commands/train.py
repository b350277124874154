"""Train or fine-tune a model on the CPU on your own data; writes a checkpoint (with its
preprocessing, label names and a record of the data) and metrics.json (per-epoch loss and val
accuracy, test accuracy, wall time).

The class count and label names come from the data. --pretrained starts from the zoo's shipped
weights (--checkpoint from yours); when the data's labels differ from the weights', the
classifier head is re-initialised and the output says so."""

from __future__ import annotations

from lkca_edge.commands.common import add_dataset_argument, add_model_arguments, model_overrides

HELP = "train or fine-tune a model on a small dataset (CPU)"


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="zoo name, e.g. lkca-1m (see `lkca-edge zoo`); "
                   "optional with --checkpoint")
    add_dataset_argument(p)
    p.add_argument("--pretrained", action="store_true",
                   help="start from the zoo model's shipped weights (transfer learning)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--out", required=True, help="output directory")
    add_model_arguments(p, checkpoint_help="start from these weights (fine-tune)")


def run(args) -> int:
    from lkca_edge.errors import UserError
    from lkca_edge.forms import check_form
    from lkca_edge.zoo import get_spec

    if args.model is None and args.checkpoint is None:
        raise UserError("name a zoo model (see `lkca-edge zoo`) or give --checkpoint")
    if args.model is not None:
        get_spec(args.model)
    if args.form:
        check_form(args.form)
    from lkca_edge.pipelines.train import TrainConfig, train_command

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads)
    cfg.check()
    outcome = train_command(args.model, args.dataset, args.out, cfg, checkpoint=args.checkpoint,
                            pretrained=args.pretrained, form=args.form, **model_overrides(args))
    m = outcome.metrics
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"{m['model']} on {m['dataset']} (from {m['start']}): test accuracy "
          f"{m['test_accuracy']:.2%}, best val {m['best_val_accuracy']:.2%}, "
          f"{m['wall_seconds']:.0f} s")
    print(f"checkpoint: {m['checkpoint']}")
    return 0
