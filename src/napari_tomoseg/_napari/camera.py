"""The viewer's camera on every napari we support: 0.9 moved it to ``viewer.scene.camera``
and deprecated ``viewer.camera`` (every step through the picks warned)."""

from __future__ import annotations


def camera_of(viewer):
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera
