"""One writer per output folder: two ``tomoseg batch`` runs into one ``-o`` gave their
tomograms the same names and replaced each other's files and manifest entries."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import TomosegError
from .atomic import host_name, process_alive

LOCK = ".tomoseg-batch.lock"


def _holder(lock: Path) -> tuple[str, int] | None:
    """(host, pid) written in the lock, or None if unreadable (a half-written one)."""
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _take_over(lock: Path, stale: tuple[str, int]) -> bool:
    """Move a dead process's lock aside (atomically: of two runs, one moves it); False when
    what was moved is another run's new lock, which is put back."""
    moved = lock.with_name(f"{LOCK}.stale-{os.getpid()}")
    try:
        os.replace(lock, moved)
    except FileNotFoundError:
        return True  # another run moved it first: try to take the lock
    if _holder(moved) != stale:
        with contextlib.suppress(OSError):
            os.link(moved, lock)  # back, unless a third run holds it by now
        moved.unlink(missing_ok=True)
        return False
    moved.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` for this process; refuse while another live one holds it. A lock
    left by a process that died on this machine is taken over; one of another machine is
    not judged (its process cannot be seen from here): the message says how to clear it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK
    mine = f"{host_name()} {os.getpid()}"
    for _ in range(2):
        try:
            with open(lock, "x") as handle:
                handle.write(mine)
            break
        except FileExistsError:
            holder = _holder(lock)
            if holder and holder[0] == host_name() and not process_alive(holder[1]):
                if _take_over(lock, holder):
                    continue
                holder = _holder(lock) or holder
            who = f"process {holder[1]} on {holder[0]}" if holder else "another process"
            raise TomosegError(f"another tomoseg batch ({who}) is writing to {folder}: wait "
                               f"for it, or write to another folder (-o). If it is not running, "
                               f"delete {lock}.") from None
    else:
        raise TomosegError(f"cannot take {lock}: another run keeps taking it.")
    try:
        yield lock
    finally:
        if lock.exists() and _holder(lock) == (host_name(), os.getpid()):
            lock.unlink()
