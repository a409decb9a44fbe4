"""The feature vocabulary: which structures tomoseg knows by name, and their colours.

Kept apart from the simulator so that the annotation session, the CLI and
the widgets can name features without importing ``synthetic`` (and with
it torch).
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = ("membrane", "microtubule", "actin", "ribosome", "carbon")
FEATURE_COLOURS: dict[str, str] = {
    "membrane": "#f2c94c",
    "microtubule": "#56ccf2",
    "actin": "#bb6bd9",
    "ribosome": "#eb5757",
    "carbon": "#828282",
}
# outer diameters (Angstrom) of the features traced as filaments (filaments.py): their defaults
FILAMENT_DIAMETERS: dict[str, float] = {"microtubule": 250.0, "actin": 70.0}
