"""Several features at once: one label volume from per-feature probabilities.

Per voxel the feature with the highest probability wins, provided it
exceeds that feature's threshold; artifact features (a carbon edge) do
not get a label of their own by default but remove voxels from the
features they are said to mask, as in Chen et al. 2017, Supp. Fig. 6.
``jobs.merge.merge_maps`` streams whole tomograms through ``merge_slab``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidSettingsError
from .small_pieces import check_min_size


@dataclass(frozen=True)
class MergeSettings:
    features: Sequence[str]
    thresholds: dict = field(default_factory=dict)  # feature -> threshold (default 0.5)
    artifacts: dict = field(default_factory=dict)  # artifact -> features it removes voxels from
    label_artifacts: bool = False
    # feature -> smallest connected piece kept, nm^3; unset or 0: every piece kept
    min_sizes: dict = field(default_factory=dict)

    def __post_init__(self):
        names = list(self.features)
        repeated = sorted({f for f in names if names.count(f) > 1})
        if repeated:
            raise InvalidSettingsError(f"feature {', '.join(repeated)} is given twice; give each "
                                       "feature's probability map once.")
        for what, given in (("a threshold", self.thresholds), ("a smallest piece", self.min_sizes)):
            unknown = [f for f in given if f not in names]
            if unknown:  # a misspelled feature's setting would be ignored without a word
                raise InvalidSettingsError(
                    f"{what} is given for {', '.join(map(str, unknown))}, which is not among "
                    f"the features ({', '.join(names)}); check the spelling.")
        for feature, value in self.min_sizes.items():
            check_min_size(feature, value)
        for feature, value in self.thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise InvalidSettingsError(
                    f"the threshold of {feature} must be a number in [0, 1), not {value!r}.")

    def threshold(self, feature: str) -> float:
        return float(self.thresholds.get(feature, 0.5))

    def min_size(self, feature: str) -> float:
        """The smallest piece of ``feature`` kept, nm^3 (0: all)."""
        return float(self.min_sizes.get(feature, 0.0))

    def label_of(self, feature: str) -> int:
        return list(self.features).index(feature) + 1


def artifact_rules(artifacts: dict[str, list[str]] | list[str], features: list[str]) -> dict:
    """{artifact: features it removes voxels from}; an artifact given without features
    (a list, or an empty list of victims) removes voxels from every other feature.

    The one rule for the CLI (``--artifact carbon`` or ``--artifact carbon=membrane``),
    batch and the widget's artifact field.
    """
    if not isinstance(artifacts, dict):
        artifacts = {a: [] for a in artifacts}
    return {a: (list(v) or [f for f in features if f != a and f not in artifacts])
            for a, v in artifacts.items()}


def merge_slab(probabilities: dict[str, np.ndarray], settings: MergeSettings) -> np.ndarray:
    """Labels (0 = nothing, i + 1 = features[i]) for one slab of per-feature probabilities."""
    missing = [f for f in settings.features if f not in probabilities]
    if missing:
        raise InvalidSettingsError(f"no probability map for {', '.join(missing)}.")
    unknown = [a for a in settings.artifacts if a not in settings.features]
    if unknown:
        raise InvalidSettingsError(f"artifact features {unknown} are not among the features.")
    names = list(settings.features)
    stack = np.stack([np.asarray(probabilities[f], dtype=np.float32) for f in names])
    thresholds = np.array([settings.threshold(f) for f in names], np.float32)
    shape = (len(names),) + (1,) * (stack.ndim - 1)
    above = stack > thresholds.reshape(shape)
    for artifact, victims in settings.artifacts.items():
        a = names.index(artifact)
        for victim in victims:
            above[names.index(victim)] &= ~above[a]
        if not settings.label_artifacts:
            above[a] = False
    scores = np.where(above, stack, -1.0)
    winner = np.argmax(scores, axis=0)
    labels = np.where(np.any(above, axis=0), winner + 1, 0)
    dtype = np.uint8 if len(names) < 255 else np.uint16
    return labels.astype(dtype)


def check_same_grid(geometries: dict[str, tuple], tolerance: float = 0.01) -> None:
    """Refuse maps that do not share one voxel grid: {feature: (voxel_size, origin)}, the
    voxel size one number or (z, y, x).

    Probabilities from tomograms of different voxel sizes or origins compare
    different places, so a per-voxel winner would be meaningless; every axis is
    compared, as a 20 A z step beside a 10 A one misplaces the voxels as much as x.
    """
    items = list(geometries.items())
    if not items:
        return
    first, (voxel0, origin0) = items[0]
    sizes0 = _voxel_sizes(voxel0)
    for feature, (voxel, origin) in items[1:]:
        if np.any(np.abs(_voxel_sizes(voxel) - sizes0) > tolerance * sizes0):
            raise InvalidSettingsError(
                f"the {feature} map has {_described(voxel)} A voxels but the {first} map "
                f"{_described(voxel0)} A; merge maps of one tomogram at one voxel size.")
        if max(abs(np.asarray(origin, float) - np.asarray(origin0, float))) > sizes0.min() / 2:
            raise InvalidSettingsError(f"the {feature} and {first} maps have different origins; "
                                       "merge maps of one tomogram.")


def _voxel_sizes(voxel: float | Sequence[float]) -> np.ndarray:
    """(z, y, x) voxel sizes of one number or three."""
    return np.broadcast_to(np.asarray(voxel, float), (3,)).copy()


def _described(voxel: float | Sequence[float]) -> str:
    """'10' for cubes, '10 x 10 x 20' (x, y, z) otherwise."""
    sizes = _voxel_sizes(voxel)
    if np.allclose(sizes, sizes[0], rtol=0.01):
        return f"{sizes[0]:g}"
    return " x ".join(f"{v:g}" for v in sizes[::-1])
