"""Errors in widgets: one line for what the user can fix, a logged traceback for bugs.

The policy is ``errors.user_message``, shared with the CLI: a
TomosegError, an OSError (full disk, read-only folder) or a MemoryError
is shown as its one-line message; anything else is a bug, logged with its
traceback and announced as such, never silently swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from napari.utils.notifications import show_error

from ..errors import kept_model_note, user_message

log = logging.getLogger("napari_tomoseg")


def report_error(exc: BaseException, notify: Callable[[str], None] | None = None) -> str:
    """Show ``exc`` as one line (logging a bug's traceback); returns the line shown."""
    notify = notify or show_error
    message = user_message(exc)
    if message is None:
        log.error("napari-tomoseg bug", exc_info=(type(exc), exc, exc.__traceback__))
        message = (f"internal error ({type(exc).__name__}: {str(exc)[:200]}); this is a bug in "
                   "napari-tomoseg, the traceback is in the log. Please report it."
                   + kept_model_note(exc))
    notify(message)
    return message


def guarded(action: Callable, report: Callable[[str], None] | None = None) -> Callable:
    """Wrap a widget action so that no error escapes into a Qt slot."""
    def run(*args):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - every error is shown or logged, none lost
            report_error(exc, report)
    return run


def quietly(action: Callable[[], object]) -> None:
    """Run ``action`` while Qt tears a widget down: nothing can be reported then, and an
    exception raised from a Qt slot would abort the process under PyQt6."""
    try:
        action()
    except Exception:  # noqa: BLE001 - see the docstring
        pass
