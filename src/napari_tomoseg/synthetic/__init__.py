"""Synthetic cellular tomograms with exact ground truth, for tests, demos and benchmarks."""

from .cell import FEATURE_COLOURS, FEATURES, CellSpec, SyntheticCell, generate_cell
from .simulate import ImagingSpec, SyntheticTomogram, simulate, write_synthetic

__all__ = [
    "FEATURES", "FEATURE_COLOURS", "CellSpec", "ImagingSpec", "SyntheticCell",
    "SyntheticTomogram", "generate_cell", "simulate", "write_synthetic",
]
