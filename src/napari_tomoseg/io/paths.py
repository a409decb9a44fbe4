"""Names from files made safe as file names, and output folders checked before work.

A feature name, a tomogram name or any other text read from a file may
hold ``/``, ``..`` or control characters; ``safe_name`` is the single
gate such text passes before it becomes part of a path, so no file can
steer an output outside its folder. ``check_writable`` probes a folder
before minutes of work, so a read-only or full output fails at once.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from ..errors import InvalidSettingsError, OutputNotWritableError, os_reason

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 100


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path, a hard link, or the same
    file on a case-insensitive file system (an output must never replace an input)."""
    a, b = Path(a), Path(b)
    try:
        return a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(outputs, inputs, overwrite: bool, option: str = "--output") -> None:
    """Before any work: no output may be an input of the run (``--overwrite`` included),
    and without ``overwrite`` none may exist; every output is checked, not the first only."""
    for out in outputs:
        for source in inputs:
            if same_file(out, source):
                raise InvalidSettingsError(f"the output {out} is an input of this run; choose "
                                           f"another {option}.")
    existing = [str(o) for o in outputs if Path(o).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3
                                           else "")
        raise FileExistsError(f"{shown} exist{'s' if len(existing) == 1 else ''}; use "
                              f"--overwrite or another {option}.")


def safe_name(name: object, default: str = "feature") -> str:
    """``name`` reduced to letters, digits, ``. _ + -``; never empty, never hidden or ``..``."""
    text = _UNSAFE.sub("_", str(name if name is not None else "")).strip("._")
    return text[:MAX_NAME] or default


def checked_name(name: str, example: str) -> str:
    """``name`` when it is a plain file name; a name like ``../x`` would write outside the
    output folder (``example``: what to suggest when the name reduces to nothing)."""
    if safe_name(name, "") != name:
        raise InvalidSettingsError(f"--name {name!r}: use letters, digits, '.', '_', '+' and "
                                   f"'-' (e.g. {safe_name(name, example)}).")
    return name


def check_writable(folder: str | os.PathLike, need_bytes: int = 0) -> Path:
    """Create ``folder`` if needed and prove a file can be written there; returns it.

    ``need_bytes`` (optional) is compared with the free space, so a run that
    would fill the disk is refused before it starts.
    """
    folder = Path(folder)
    if folder.is_file():
        raise OutputNotWritableError(f"cannot write into the output folder {folder}: it is a "
                                     "file; give a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tomoseg-write-test.{uuid.uuid4().hex[:8]}.partial"
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write into the output folder {folder}: {os_reason(exc)}.") from exc
    if need_bytes:
        free = free_bytes(folder)
        if free is not None and free < need_bytes:
            raise OutputNotWritableError(
                f"the output folder {folder} has {free / 1e6:,.0f} MB free but the results "
                f"need about {need_bytes / 1e6:,.0f} MB.")
    return folder


def free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # Windows has no statvfs
        return None
    return stats.f_bavail * stats.f_frsize
