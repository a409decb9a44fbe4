"""Which volume a box file's boxes were placed on: a tomogram of another binning is refused.

A box is in the pixels of the volume it was placed on. Trained on a tomogram
binned otherwise, its centre and mask would land elsewhere, and only boxes
outside the volume were noticed.
"""

from __future__ import annotations

import os

from .errors import InvalidBoxesError


class BoxList(list):
    """Boxes with the shape (z, y, x) of the volume they were placed on (None: not recorded,
    as in files written before it was)."""

    def __init__(self, boxes=(), grid: tuple[int, int, int] | None = None):
        super().__init__(boxes)
        self.grid = grid


def parse_grid(value: object, path: str | os.PathLike) -> tuple[int, int, int] | None:
    """The ``grid`` of a box file's body, checked (None where it has none)."""
    if value is None:
        return None
    counts = isinstance(value, list) and len(value) == 3 and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    if not counts:
        raise InvalidBoxesError(f"{path}: its grid must be three slice counts (z y x), not "
                                f"{value!r}.")
    return tuple(int(n) for n in value)


def check_box_grid(boxes: list, shape: tuple[int, ...], source: str | os.PathLike) -> None:
    """Refuse a tomogram of another shape than the volume the boxes were placed on."""
    grid = getattr(boxes, "grid", None)
    if grid is not None and tuple(grid) != tuple(shape[-3:]):
        placed, here = (" x ".join(str(n) for n in g) for g in (grid, shape[-3:]))
        raise InvalidBoxesError(
            f"the boxes in {source} were placed on a {placed} volume (z y x), but this tomogram "
            f"is {here}: another binning or another tomogram would put them on other places. "
            "Give the tomogram they were placed on, or place them again on this one.")
