"""The ``lkca-edge`` command line. Each subcommand is a module in ``lkca_edge.commands``.

Command modules import nothing heavy at module level, so ``lkca-edge --help`` stays instant.
Errors a user can fix print as one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lkca_edge import __version__

# Order in --help; a command module not listed here still appears, after these.
COMMAND_ORDER = ("bench", "zoo", "train", "export", "validate", "devices", "profile", "runs",
                 "compare", "classify")


def command_names() -> list[str]:
    """Every module in lkca_edge.commands that defines a subcommand (a new command = one file)."""
    import pkgutil

    from lkca_edge import commands

    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if m.name != "common"}
    return [n for n in COMMAND_ORDER if n in found] + sorted(found - set(COMMAND_ORDER))


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too (exit 2), like every other error; --help shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lkca-edge",
        description="Take compact LKCA vision models to phones and edge boards: "
                    "train, quantize, convert, validate, profile.")
    parser.add_argument("--version", action="version", version=f"lkca-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_names():
        module = importlib.import_module(f"lkca_edge.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("LKCA_EDGE_DEBUG") == "1"
    import signal
    import threading

    from lkca_edge.errors import UserError, printable, raise_interrupted
    from lkca_edge.fileio import private_tempdir

    # SIGTERM and SIGHUP behave like Ctrl-C: atomic writes remove their temporary files, the
    # private temporary directory goes, the bench keeps its finished cells, and the exit code is
    # 128 + the signal (143 for SIGTERM).
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
                saved[sig] = signal.signal(sig, raise_interrupted)
    # Every line an error prints is made printable: messages quote file names, labels and
    # fields of untrusted files, and an ESC or newline in them must never reach the terminal.
    try:
        with private_tempdir():
            return int(args._module.run(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"lkca-edge {args.command}: error: {printable(exc, 2000)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGINT, SIGTERM or SIGHUP (errors.Interrupted)
        message = getattr(exc, "message", "") or "interrupted"
        print(f"lkca-edge {args.command}: {printable(message, 2000)}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except BrokenPipeError:
        return 141
    except Exception as exc:  # an internal fault: still one line unless --debug
        interrupt = _interrupt_in(exc)
        if interrupt is not None:  # a signal that landed inside a library (an import, say)
            message = getattr(interrupt, "message", "") or "interrupted"
            print(f"lkca-edge {args.command}: {printable(message, 2000)}", file=sys.stderr)
            return int(getattr(interrupt, "exit_code", 130))
        if debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"lkca-edge {args.command}: internal error: {type(exc).__name__}: "
              f"{printable(msg, 300)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _interrupt_in(exc: BaseException):
    """The KeyboardInterrupt (SIGINT, SIGTERM, SIGHUP) a library turned into another exception
    (``ImportError: initialization failed`` when it lands in a native module's init), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
