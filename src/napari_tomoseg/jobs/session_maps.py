"""Read a session's finished maps off the GUI thread.

A restore read every map in the GUI thread: four maps of a large tomogram on a network disk
(600 MB each as float16) froze napari for tens of seconds with no word of progress.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import TomosegError
from ..probability_maps import open_probability
from .progress import Job, Progress


def read_maps_job(maps: dict[str, str | os.PathLike], shape: tuple[int, ...]) -> Job[list[str]]:
    """Each map as float16 0-1 (a copy: Segment and Train write into it), one progress step
    per map with payload ``(feature, map or None, problem or None)``; returns the features
    read. A map of another shape or one that cannot be read is a problem, never raised: the
    other maps still come back."""
    read: list[str] = []
    total = len(maps)
    for done, (feature, path) in enumerate(maps.items(), start=1):
        array, problem = None, None
        try:  # a map stored as 0-255 (segment --dtype uint8) comes back as 0-1
            data, _ = open_probability(Path(path))
            if tuple(data.shape) != tuple(shape):  # a map of other data: not shown, said
                problem = (f"the map of '{feature}' is {' x '.join(map(str, data.shape))}, "
                           "not this tomogram's shape")
            else:
                array = np.array(data, np.float16)
                read.append(feature)
            del data  # one raw map held at a time
        except (TomosegError, OSError) as exc:
            problem = f"the map of '{feature}': {exc}"
        following = list(maps)[done] if done < total else None
        yield Progress(done, total, f"read the map of '{feature}' ({done} of {total})"
                       + (f"; reading '{following}'..." if following else ""),
                       payload=(feature, array, problem))
    return read
