"""MRC header labels that travel with tomoseg's maps: which label value is which feature."""

from __future__ import annotations

import numpy as np


def test_a_label_legend_spans_labels_and_reads_back(tmp_path):
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.probability_header import (LABELS_MARK, legend_labels,
                                                      stored_legend)

    names = {i: f"feature-number-{i}" for i in range(1, 12)}  # 11 names: three labels
    legend = legend_labels(names)
    assert 1 < len(legend) <= 8 and all(len(text) <= 80 for text in legend)
    path = write_volume(tmp_path / "labels.mrc", np.zeros((2, 4, 4), np.uint8), 10.0,
                        labels=(LABELS_MARK, *legend))
    assert stored_legend(path) == names
    assert legend_labels({1: "a;b"}) == ()  # a name that cannot be told apart: no legend
    assert legend_labels({i: "x" * 60 for i in range(1, 12)}) == ()  # does not fit
