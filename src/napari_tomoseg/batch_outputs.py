"""The files a batch writes for each tomogram, checked before any work.

A batch replaces its own outputs on a rerun (the manifest lists them), but it
wrote ``NAME_FEATURE.mrc`` over whatever held that name: another program's
map, a tomogram of the same folder, even an input it had not read yet, which
it then segmented as the first one's map and called done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .batch_particles import filament_outputs
from .errors import TomosegError


def planned_outputs(name: str, features: Iterable[str], pick: Iterable[str],
                    trace: Iterable[str] = ()) -> list[str]:
    """File names (in the output folder) a batch writes for the tomogram called ``name``."""
    return ([f"{name}_{f}.mrc" for f in features] + [f"{name}_labels.mrc"]
            + [f"{name}_{f}.star" for f in pick]
            + [file for f in trace for file in filament_outputs(name, f)])


def check_batch_outputs(folder: Path, names: Iterable[str], features: Sequence[str],
                        pick: Sequence[str], inputs: Iterable[str], recorded: set[str],
                        overwrite: bool, trace: Sequence[str] = ()) -> None:
    """Refuse an output that is an input (always), or an existing file the manifest does
    not list as this folder's batch output (unless ``overwrite``)."""
    given = {Path(p).resolve() for p in inputs}
    planned = [f for name in names for f in planned_outputs(name, features, pick, trace)]
    planned += [f"all_{f}.star" for f in pick] if not recorded else []
    clashes = [f for f in planned if (folder / f).resolve() in given]
    if clashes:
        raise TomosegError(f"the batch would write {clashes[0]} over one of its inputs: choose "
                           "another --output folder.")
    foreign = [f for f in planned if f not in recorded and (folder / f).exists()]
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise TomosegError(f"{folder} holds {shown}, not written by a batch there: use "
                           "--overwrite to replace, or another --output folder.")
