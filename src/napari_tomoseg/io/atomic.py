"""Write a file so that it appears whole or not at all.

Every output of napari-tomoseg is written to a hidden partial file in the
same folder, flushed to disk, then renamed over the target in one step.
The partial's name (``.NAME.tomoseg-partial-HOST-PID-RANDOM``) tells a
reader it is no result, and tells a later run whether the process that
wrote it is gone, so stale partials left by a kill can be removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

PARTIAL_TAG = ".tomoseg-partial-"
_PATTERN = re.compile(r"^\..+\.tomoseg-partial-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+$")
_LEGACY = re.compile(r"^\..+\.partial$")  # fixed names written by versions before this module


def host_name() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def partial_path(path: str | os.PathLike) -> Path:
    """A unique hidden sibling of ``path`` that no reader mistakes for a result."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_TAG}{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_partial(path: str | os.PathLike) -> bool:
    """True for unfinished outputs, of this version or an older one."""
    name = Path(path).name
    return bool(_PATTERN.match(name) or _LEGACY.match(name))


def fsync_path(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk; folders that cannot be opened are skipped."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # e.g. Windows: folders cannot be opened, renames are durable enough
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def commit_partial(tmp: str | os.PathLike, path: str | os.PathLike,
                   backup: str | os.PathLike | None = None) -> Path:
    """Flush a finished partial and rename it over ``path`` (keeping the old one as ``backup``)."""
    path = Path(path)
    fsync_path(tmp)
    if backup is not None and path.exists():
        _second_name(path, Path(backup))
    os.replace(tmp, path)
    fsync_path(path.parent, directory=True)
    return path


def _second_name(path: Path, backup: Path) -> None:
    """``backup`` becomes another name of the file ``path`` holds, so ``path`` exists at
    every moment: renaming it aside first left only the backup after a kill between the
    two renames, and readers found no model or session."""
    tmp = partial_path(backup)
    try:
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links: a copy
            shutil.copy2(path, tmp)
        os.replace(tmp, backup)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, backup: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a partial path to write; on success it replaces ``path`` in one rename.

    With ``backup``, the file ``path`` held so far is kept under that name too (a hard
    link, or a copy) just before the new one takes its place, so ``path`` always exists.
    Any exception in the block, or in the flush, removes the partial and leaves ``path``
    as it was.
    """
    path = Path(path)
    if path.is_dir():  # said of the path the user gave, not of our hidden partial
        raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
    tmp = partial_path(path)
    try:
        yield tmp
        commit_partial(tmp, path, backup)
    except OSError as exc:  # e.g. a full disk: name the user's file, not our hidden partial
        raise_for_user(exc, tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def raise_for_user(exc: OSError, partial: Path, path: Path):
    """Re-raise ``exc`` naming ``path`` where it named our ``partial`` or no file at all.

    A full disk or a file-size limit fails a plain write, whose error carries no file
    name: the message would say "cannot use a file".
    """
    named = exc.filename
    if exc.errno and (named is None or (isinstance(named, (str, os.PathLike))
                                        and Path(named) == Path(partial))):
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    raise exc


@contextlib.contextmanager
def files_together(paths: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """Yield a path per output, in a hidden staging folder beside them; they take their
    places only once the block has written them all, and none does if writing fails (a full
    disk half way through a result set left new maps beside an earlier run's STAR and
    settings). The renames at the end are not one step: a failure there is not undone.

    Staged files keep their own names, so a writer's messages name the user's file."""
    paths = {key: Path(path) for key, path in paths.items()}
    folders = {path.parent for path in paths.values()}
    if len(folders) != 1:
        raise ValueError("files written together share one folder")
    staging = partial_path(folders.pop() / "result-set")
    staging.mkdir()
    staged = {key: staging / path.name for key, path in paths.items()}
    try:
        yield staged
        for key, path in paths.items():
            if staged[key].exists():
                commit_partial(staged[key], path)
    except OSError as exc:  # name the user's file, not the staging folder
        named = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else None
        user = next((paths[k] for k, s in staged.items()
                     if named is not None and staging in (named, *named.parents)
                     and s.name in named.name), None)
        if user is not None and exc.errno:
            raise type(exc)(exc.errno, exc.strerror, str(user)) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, backup: str | os.PathLike | None = None) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path, backup) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, backup: str | os.PathLike | None = None) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path, backup) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine may still run (unsure counts as alive)."""
    if os.name == "nt":  # os.kill(pid, 0) there sends Ctrl-C (signal 0 is CTRL_C_EVENT)
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is someone else's, or cannot tell: keep its file
    return True


def _windows_process_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def clean_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove partials in ``folder`` whose writer (on this machine) is dead; returns them.

    Only names of ``partial_path``'s exact form are ever removed: other hidden
    ``.*.partial`` files may belong to other programs (editors, sync tools,
    downloads) sharing the folder. Partials of live processes, and of other
    machines sharing the folder, are kept.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    # exactly what partial_path writes on this host: other machines' partials are theirs
    ours = re.compile(rf"^\..+{re.escape(PARTIAL_TAG + host_name())}-(?P<pid>\d+)-[0-9a-f]{{8}}$")
    for entry in entries:
        match = ours.match(entry.name)
        if not match or int(match["pid"]) == os.getpid() or process_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():  # a result set's staging folder
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            continue
        if not entry.is_file():
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def kept_until_written(fs, path: str, refused: type[Exception]) -> Iterator[None]:
    """A file or folder written in place by another library (copick: a JSON truncated first,
    a zarr chunk by chunk) never loses the earlier one to a failed write: it is renamed aside
    (``PATH.replacing``; copick lists only ``.json`` and ``.zarr``), put back if the write
    fails, deleted once the new one is complete. A kill in between leaves it there, and the
    next write refuses until it is moved back."""
    aside, done = f"{path}.replacing", f"{path}.replaced"
    if fs.exists(aside):
        raise refused(f"{aside} is an earlier result set aside by a write that did not "
                      "finish: move it back (or delete it) before writing again.")
    if fs.exists(done):  # replaced by a write that completed: only its deletion was cut short
        fs.rm(done, recursive=True)
    if not fs.exists(path):
        yield
        return
    _rename(fs, path, aside)
    try:
        yield
    except BaseException:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        _rename(fs, aside, path)
        raise
    _rename(fs, aside, done)  # a kill while deleting leaves no 'earlier result' to restore
    fs.rm(done, recursive=True)


def _rename(fs, source: str, target: str) -> None:
    """A rename on a local filesystem (copick's reconnecting fsspec wrapper would copy, and
    cannot); fsspec's move elsewhere."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if {"file", "local"} & set(protocols):
        os.replace(source.removeprefix("file://"), target.removeprefix("file://"))
    else:
        fs.mv(source, target, recursive=True)
