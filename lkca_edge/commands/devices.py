"""List the device profiles: built-ins (profiles/devices/*.yaml) plus YAML files in --profiles-dir
and in the directories of LKCA_EDGE_PROFILES (a user profile replaces a built-in of its name)."""

from __future__ import annotations

HELP = "list device profiles (phones, boards, this host) with their budgets"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list (with sources)")
    p.add_argument("--profiles-dir", metavar="DIR", action="append",
                   help="also read *.yaml device profiles from DIR (repeatable)")


def run(args) -> int:
    from lkca_edge.profiles.devices import load_profiles

    profiles = load_profiles(args.profiles_dir)
    if args.json:
        from lkca_edge.commands.common import print_json

        print_json([p.to_dict() for p in profiles.values()])
        return 0
    user = any(not p.builtin for p in profiles.values())
    header = ["name", "os", "threads", "RAM MB", "p90 ms", "drop pt", "backends", "precisions"]
    rows = [[p.name, p.os, str(p.threads), f"{p.ram_budget_mb:g}", f"{p.latency_budget_ms:g}",
             f"{p.accuracy_gate:g}", ",".join(p.backends), ",".join(p.precisions)]
            + (["built-in" if p.builtin else p.path] if user else []) for p in profiles.values()]
    if user:
        header.append("from")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nbudgets are product choices (RAM = peak resident memory, p90 = batch-1 latency, drop = "
          "max top-1 accuracy drop vs fp32); `--json` shows the source of every number")
    for p in profiles.values():
        print(f"  {p.name}: {p.cpu}" + (f" (at {p.remote})" if p.remote else ""))
    return 0
