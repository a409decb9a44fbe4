"""The Pick tab's line for the pick in view: its network score and, once the Average tab
scored it against a reference, its reference score (low ones are most likely look-alikes)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def describe_pick(features: pd.DataFrame, index: int, total: int) -> str:
    """'pick 3/62, score 0.91, reference score 0.142' (or 'added by hand (no score)')."""
    score = float(features["score_norm"][index])
    text = f"pick {index + 1}/{total}, " + (f"score {score:.2f}" if np.isfinite(score)
                                            else "added by hand (no score)")
    if "reference_score" in features:
        reference = float(features["reference_score"][index])
        if np.isfinite(reference):
            text += f", reference score {reference:.3f}"
    return text
