"""List the bench runs recorded in the SQLite history, newest first: id, time, models, device,
host, cells ok/failed and the run directory. Compare two with `lkca-edge compare A B`."""

from __future__ import annotations

HELP = "list recorded bench runs (the run history)"


def add_arguments(p) -> None:
    p.add_argument("--db", metavar="PATH", help="run history database (default: $LKCA_EDGE_DB, "
                   "else the user's data dir: .../lkca-edge/runs.sqlite)")
    p.add_argument("--limit", type=int, default=20, help="show the N newest runs (default 20; 0 = all)")
    p.add_argument("--json", action="store_true", help="print a JSON list")


def notice(text: str) -> None:
    import sys

    from lkca_edge.errors import printable

    print(f"lkca-edge runs: {printable(text, 500)}", file=sys.stderr)


def run(args) -> int:
    from lkca_edge.errors import UserError
    from lkca_edge.results import ResultsStore, resolve_db_path

    if args.limit < 0:
        raise UserError(f"--limit must be 0 or more, got {args.limit}")
    path = resolve_db_path(args.db)
    if not path.exists():
        if args.json:
            print("[]")
        else:
            print(f"no runs recorded yet ({path} does not exist); `lkca-edge bench` records one")
        return 0
    with ResultsStore(path, read_only=True, warn=notice) as store:
        rows = store.list_runs(args.limit or None)
    if args.json:
        from lkca_edge.commands.common import print_json

        print_json([r.to_dict() for r in rows])
        return 0
    if not rows:
        print(f"no runs recorded in {path}")
        return 0
    from rich.console import Console
    from rich.table import Table

    from lkca_edge.commands.common import rich_text

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title=rich_text(f"bench runs in {path}"), title_justify="left", header_style="bold")
    for h, j in (("id", "right"), ("time", "left"), ("models", "left"), ("device", "left"),
                 ("host", "left"), ("ok", "right"), ("failed", "right"), ("run directory", "left")):
        table.add_column(h, justify=j)
    for r in rows:
        models = ", ".join(r.models) + (f" [{r.label}]" if r.label else "")
        table.add_row(*(rich_text(x) for x in (str(r.id), r.created, models, r.device, r.host,
                                               str(r.n_ok), str(r.n_failed), r.out_dir)),
                      style="red" if r.n_ok == 0 else None)
    console.print(table)
    return 0
