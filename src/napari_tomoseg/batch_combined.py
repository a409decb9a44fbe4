"""The batch's combined outputs: one STAR per picked feature over every finished tomogram."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io.atomic import atomic_path


def write_combined_star(rows: list[dict], folder: Path, settings) -> list[Path]:
    """One STAR per picked feature with the particles of every finished tomogram of the
    folder (a rerun of a few dropped the others' rows), each as its own STAR file has them."""
    import starfile

    from .io.star import read_star_blocks

    written = []
    for feature in settings.pick:
        parts, optics, seen = [], None, set()
        for row in rows:
            path = folder / f"{row['name']}_{feature}.star"
            if row["status"] in ("done", "skipped") and path.exists() and path not in seen:
                seen.add(path)  # a file is read once, whatever the rows say
                blocks = read_star_blocks(path)
                parts.append(blocks["particles"])
                optics = blocks.get("optics")
        if parts:
            target = folder / f"all_{feature}.star"
            with atomic_path(target) as tmp:
                blocks = {"particles": pd.concat(parts, ignore_index=True)}  # first: RELION reads it
                if optics is not None:
                    blocks["optics"] = optics
                starfile.write(blocks, tmp, float_format="%.6f")
            written.append(target)
    return written
