"""The feature vocabulary: which structures tomoseg knows by name, and their colours.

Kept apart from the simulator so that the annotation session, the CLI and
the widgets can name features without importing ``synthetic`` (and with
it torch).
"""

from __future__ import annotations

import re

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


def feature_default(table: dict, feature: str | None, default):
    """``table``'s entry for ``feature``, matched by the last word of its name, singular or
    plural ("membranes", "plasma membrane", not "membrane-bound vesicle"), else ``default``."""
    words = re.findall(r"[a-z]+", (feature or "").lower())
    last = words[-1] if words else ""
    return table.get(last, table.get(last[:-1], default) if last.endswith("s") else default)
