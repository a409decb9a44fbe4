"""The Filaments tab on the realistic yardstick's training cell (run under Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python docs/make_filaments_figure.py

Trains the default microtubule model (three networks, seed 6 as in the benchmark's
tables) on the benchmark's 5 positive
and 50 negative boxes of cell 0 (benchmarks/realistic.py), segments the cell, opens the
tomogram and the map in napari with the Filaments tab, traces, and saves one screenshot
of the window in 3D, the tubes over the map's threshold, into
docs/images/filaments_tab.png. About two minutes on two CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "benchmarks")]

import realistic as rs  # noqa: E402
from bench_realistic import run_method  # noqa: E402
from make_tutorial_screenshots import HEIGHT, WIDTH, pump, shot, wait_for  # noqa: E402


def main() -> None:
    import napari

    from napari_tomoseg._napari.filaments_widget import FilamentsWidget
    from napari_tomoseg._napari.layer_tags import tag

    cells = [rs.load_cell(0, False), rs.load_cell(1, False)]
    boxes = rs.user_boxes(cells[0], "microtubule", 5, 50)
    maps, threshold, seconds = run_method("unet", cells, boxes, "microtubule", seed=6)
    print(f"trained in {seconds:.0f} s, stored threshold {threshold:.2f}", flush=True)
    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(WIDTH, HEIGHT)
    viewer.add_image(cells[0]["tomogram"], name="cell 0", scale=(10.0,) * 3, opacity=0.35)
    prob = viewer.add_image(maps[0].astype(np.float32), name="prediction: microtubule",
                            scale=(10.0,) * 3, colormap="cyan", blending="additive",
                            contrast_limits=(threshold, 1.0), metadata={"threshold": threshold})
    tag(prob, "probability", feature="microtubule")
    widget = FilamentsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Filaments", area="right")
    handle = widget.trace()
    wait_for(handle)
    for layer in list(viewer.layers):
        if layer.name == "cell 0":
            layer.visible = False
    viewer.dims.ndisplay = 3
    pump(0.5)
    viewer.reset_view()
    viewer.camera.angles = (0.0, 20.0, 70.0)
    pump(1.0)
    print(widget.status.value, flush=True)
    shot(window, "filaments_tab.png")
    viewer.close()


if __name__ == "__main__":
    main()
