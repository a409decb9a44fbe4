"""Where the shipped sample tomograms live, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

from .errors import TomosegError

SYNTHETIC = "synthetic/synthetic_cell.mrc"
MYCOPLASMA = "mpneumoniae_20A.mrc"


def sample_folders() -> list[Path]:
    package = Path(__file__).resolve().parent
    # a wheel carries the folder inside the package; a checkout has it at the top level
    return [package / "sample_data", package.parents[1] / "sample_data"]


def sample_path(relative: str) -> Path:
    for folder in sample_folders():
        candidate = folder / relative
        if candidate.exists():
            return candidate
    raise TomosegError(
        f"the sample file {relative} is not installed; recreate it with the scripts in "
        "sample_data/ of the source checkout (see sample_data/README.md).")
