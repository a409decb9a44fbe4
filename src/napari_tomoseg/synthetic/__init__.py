"""Synthetic cellular tomograms with exact ground truth, for tests, demos and benchmarks."""

from ..features import FEATURE_COLOURS, FEATURES  # kept importable from here
from .cell import CellSpec, SyntheticCell, generate_cell
from .simulate import ImagingSpec, SyntheticTomogram, simulate, write_synthetic

__all__ = [
    "FEATURES", "FEATURE_COLOURS", "CellSpec", "ImagingSpec", "SyntheticCell",
    "SyntheticTomogram", "generate_cell", "simulate", "write_synthetic",
]
