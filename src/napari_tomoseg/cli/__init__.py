"""``tomoseg``: every action of the plugin from a shell, for batches and clusters.

Errors a user can cause end as one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.

Each command parses its arguments, runs one job of ``napari_tomoseg.jobs``
with one progress bar (``progress.run_with_bar``) and prints a summary;
the commands live in modules by area: ``files``, ``engine``,
``pick``, ``trace``, ``averaging``, ``rescore``, ``batch`` and ``launch``.
"""

from __future__ import annotations

import argparse
import signal
import warnings
import sys
import threading

from .. import __version__
from ..errors import user_message
from . import averaging, batch, engine, files, launch, pick, rescore, trace

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit status 2), like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tomoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-tomoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (files, engine, pick, trace, averaging, rescore, batch, launch):
        module.add_parsers(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster's time limit, ``kill``): handled as Ctrl-C, so a job cleans up
    its partial outputs and a training keeps its best model so far."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated()


def _catch_sigterm(command: str):
    """Install the SIGTERM handler for a job command; returns what to restore (or None).

    Not for ``launch`` (Qt would hand the exception to napari instead of quitting), and
    only in the main thread, the one place Python lets a handler be set.
    """
    if command in ("launch", "demo") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as one line for the user, not Python's file, line number and source line;
    on a line of its own when a progress bar is being drawn."""
    from tqdm import tqdm

    bar_open = bool(getattr(tqdm, "_instances", None))
    return f"{chr(10) if bar_open else ''}tomoseg: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = _catch_sigterm(args.command)
    formatting = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        print(f"tomoseg: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # the user can act on these (one line); a bug keeps its traceback
        message = user_message(exc)
        if message is None:
            raise
        print(f"tomoseg: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = formatting
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
