"""Exceptions with messages written for the person at the keyboard.

Every error a user can cause (a bad file, a bad setting) is one of these,
so the CLI and the napari plugin can show the message without a traceback.
``user_message`` is the one policy both faces share: what is shown as a
single line, and what is a bug that keeps its traceback.
"""

from __future__ import annotations

import errno


class TomosegError(Exception):
    """Base class: the message alone explains the problem and what to do."""


class InvalidVolumeError(TomosegError, ValueError):
    """A volume file cannot be used (not MRC, truncated, wrong shape, ...)."""


class InvalidCoordinatesError(TomosegError, ValueError):
    """A particle coordinate file or table cannot be used."""


class InvalidSettingsError(TomosegError, ValueError):
    """A parameter is out of its meaningful range."""


class InvalidBoxesError(TomosegError, ValueError):
    """A box file, a mask archive or a box does not describe usable training examples."""


class NonFiniteError(TomosegError, ValueError):
    """NaN or infinite values where numbers must be finite (voxels, a loss, weights)."""


class OutputNotWritableError(TomosegError, OSError):
    """An output folder cannot be written (read-only, missing rights, full disk)."""


class InvalidModelError(TomosegError, ValueError):
    """A model file is corrupt, truncated, foreign or from an incompatible version."""


class InvalidAlignmentError(TomosegError, ValueError):
    """A tilt-series alignment file (e.g. IMOD .xf) cannot be used."""


class CopickError(TomosegError, ValueError):
    """A copick project, run, tomogram or object cannot be used as asked."""


class Cancelled(TomosegError):
    """The user stopped a long job; nothing half-done was kept."""


_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large for this file system or limit",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it exists already",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: what, where and why, without a traceback."""
    if isinstance(exc, TomosegError) or not exc.errno:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = exc.filename if exc.filename is not None else "a file"
    return f"cannot use {where}: {os_reason(exc)}."


def os_reason(exc: OSError) -> str:
    """Why a file operation failed, in words (full disk, read-only, ...)."""
    if not exc.errno:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _ERRNO_HINTS.get(exc.errno, exc.strerror or type(exc).__name__)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can act on; None for a bug."""
    if isinstance(exc, TomosegError):
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    elif isinstance(exc, OSError):
        message = describe_os_error(exc)
    elif isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's
        message = "out of memory: bin the tomogram or use a smaller region."  # GPU one too
    else:
        return None
    return message + kept_model_note(exc)


def kept_model_note(exc: BaseException) -> str:
    """Where a failed training kept its best weights (``kept_model``), or nothing."""
    kept = getattr(exc, "kept_model", None)
    return f" The best weights so far are kept in {kept}." if kept is not None else ""
