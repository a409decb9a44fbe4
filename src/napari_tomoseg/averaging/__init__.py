"""Subtomogram averaging: extraction, alignment with a missing-wedge model,
gold-standard refinement with FSC, symmetry and classification (torch, no GUI)."""

from .align import Aligner, Alignment
from .classify import ClassifySettings, ClassResult, ClassState, classify, iter_classify
from .extract import Subtomograms, extract_subtomograms
from .files import aligned_particle_table, write_average_result, write_class_result
from .refine import AverageResult, AverageSettings, IterationState, average, iter_average
from .rotations import (angular_distance, local_rotations, relion_angles, relion_matrices,
                        symmetry_operators, uniform_rotations)
from .volumes import fourier_shell_correlation, resolution_from_fsc

__all__ = [
    "Aligner", "Alignment", "AverageResult", "AverageSettings", "ClassResult", "ClassState",
    "ClassifySettings", "IterationState", "Subtomograms", "aligned_particle_table",
    "angular_distance", "average", "classify", "extract_subtomograms",
    "fourier_shell_correlation", "iter_average", "iter_classify", "local_rotations",
    "relion_angles", "relion_matrices", "resolution_from_fsc", "symmetry_operators",
    "uniform_rotations", "write_average_result", "write_class_result",
]
