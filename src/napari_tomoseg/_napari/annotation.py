"""Keeps a Session and its napari layers in step: boxes (Shapes), masks (Labels), overlays.

The session is the source of truth. Boxes are drawn as rectangles on
their slice in a Shapes layer (edge in the feature's colour; negatives
grey, thin and shaded so they read as "not this"); moving or deleting them
with napari's own shape tools updates the session. Masks are painted
with napari's Labels tools in a layer whose label value is the feature's
number; a positive box's mask is what is painted inside it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from napari.utils.colormaps import Colormap, DirectLabelColormap

from ..annotations import Box, crop_slice
from ..errors import TomosegError
from ..removed_boxes import keep_removed
from ..session import Session
from ..layer_data import probability_colormap_spec
from .layer_tags import find, layers_with, tag, tomogram_key

NEGATIVE_FACE = "#9e9e9e55"
NEGATIVE_EDGE = "#bdbdbd"
BOXES_LAYER = "tomoseg boxes"
MASKS_LAYER = "tomoseg masks"


def overlay_name(feature: str) -> str:
    return f"prediction: {feature}"


class AnnotationController:
    """All layer bookkeeping of one tomogram's session; widgets call into this."""

    def __init__(self, viewer, image: Image, session: Session,
                 notify: Callable[[str], None] | None = None):
        self.viewer = viewer
        self.image = image
        self.session = session
        names = session.feature_names()  # the feature worked on last, restored
        self.active = session.active if session.active in names else (names or [None])[0]
        self._syncing = False
        self.moved = False  # the last box placed was moved inside the slice
        self.notify = notify or show_info
        self._left_outside: dict[int, np.ndarray] = {}  # slice -> paint a box move left
        self.shape = tuple(image.data.shape)
        self.boxes_layer = self._reuse("boxes") or self._new_boxes_layer()
        self.masks_layer = self._reuse("masks") or self._new_masks_layer()
        if self.masks_layer.data.shape != self.shape:  # the tomogram's data were replaced
            self.masks_layer.data = np.zeros(self.shape, np.uint8)
        else:  # reused: it shows this session's masks only, not those of the session before
            self.masks_layer.data[:] = 0
        self._restore_masks()
        self.refresh_boxes()
        self.refresh_colours()
        self.listen()

    def _new_boxes_layer(self):
        layer = self.viewer.add_shapes(ndim=3, name=BOXES_LAYER, edge_width=2,
                                       scale=self.image.scale, units=self.image.units,
                                       translate=self.image.translate)
        tag(layer, "boxes", tomogram=tomogram_key(self.image))
        return layer

    def _new_masks_layer(self, data: np.ndarray | None = None):
        layer = self.viewer.add_labels(
            np.zeros(self.shape, np.uint8) if data is None else data, name=MASKS_LAYER,
            opacity=0.5, scale=self.image.scale, units=self.image.units,
            translate=self.image.translate)
        tag(layer, "masks", tomogram=tomogram_key(self.image))
        return layer

    def listen(self) -> None:
        self.boxes_layer.events.data.connect(self._on_shapes_changed)
        self.masks_layer.events.paint.connect(self._on_paint)
        self.masks_layer.events.set_data.connect(self._on_redrawn)

    def _reuse(self, role: str):
        """This tomogram's layer of ``role`` from an earlier session start, if still open."""
        return find(self.viewer, role, tomogram=tomogram_key(self.image))

    def detach(self) -> None:
        """Another session takes over the layers: this one stops listening to them."""
        self.boxes_layer.events.data.disconnect(self._on_shapes_changed)
        self.masks_layer.events.paint.disconnect(self._on_paint)
        self.masks_layer.events.set_data.disconnect(self._on_redrawn)

    def ensure_layers(self) -> list[str]:
        """Make the boxes or masks layer again if the user deleted it, from the session (and
        the deleted layer's paint); returns their names. Without this, every later action
        failed. New layers, not the deleted ones put back: napari crashed on that."""
        missing = [layer for layer in (self.boxes_layer, self.masks_layer)
                   if layer not in self.viewer.layers]
        if not missing:
            return []
        self.detach()
        if self.boxes_layer in missing:
            self.boxes_layer = self._new_boxes_layer()
        if self.masks_layer in missing:
            self.masks_layer = self._new_masks_layer(np.asarray(self.masks_layer.data))
        self.refresh_colours()
        self.listen()
        return [layer.name for layer in missing]

    # geometry ---------------------------------------------------------------
    def current_z(self) -> int:
        world_z = self.viewer.dims.point[0]
        return int(np.clip(round((world_z - self.image.translate[0]) / self.image.scale[0]), 0,
                           self.shape[0] - 1))

    def cursor_yx(self) -> tuple[float, float]:
        data = self.image.world_to_data(self.viewer.cursor.position)
        return float(data[-2]), float(data[-1])

    # features ---------------------------------------------------------------
    def set_active(self, name: str) -> None:
        self.session.feature(name)
        self.active = self.session.active = name
        self.masks_layer.selected_label = self.session.label_of(name)

    def refresh_colours(self) -> None:
        colours = {0: "transparent", None: "transparent"}
        for feature in self.session.features:
            colours[self.session.label_of(feature.name)] = feature.colour
        self.masks_layer.colormap = DirectLabelColormap(color_dict=colours)
        if self.active:
            self.masks_layer.selected_label = self.session.label_of(self.active)
        for feature in self.session.features:
            for layer in layers_with(self.viewer, "probability", feature=feature.name,
                                     tomogram=tomogram_key(self.image)):
                layer.colormap = probability_colormap(feature.colour,
                                                      layer.metadata.get("threshold", 0.5))
        self.refresh_boxes()

    # boxes --------------------------------------------------------------------
    def place_box(self, positive: bool, z: int | None = None, y: float | None = None,
                  x: float | None = None) -> Box:
        if self.active is None:
            raise TomosegError("add a feature first.")
        if y is None or x is None:
            y, x = self.cursor_yx()
        z = self.current_z() if z is None else z
        y, x = self.inside(y, x)
        box = self.session.add_box(self.active, z, y, x, positive)
        if positive:
            box.mask = self._mask_crop(box)
            self.session.save()
        self._add_rectangle(box)  # one shape added, not the layer rebuilt: fast with many boxes
        return box

    def inside(self, y: float, x: float) -> tuple[float, float]:
        """A click near the edge moves the box inward until it lies inside the slice (where
        the slice is large enough); ``moved`` says so. A box three quarters outside was
        taken as it was, and trained on padding as if it were labelled."""
        size, (ny, nx) = self.session.box_size, self.shape[1:]
        half = size / 2
        new_y = float(np.clip(y, half, ny - half)) if ny >= size and 0 <= y < ny else y
        new_x = float(np.clip(x, half, nx - half)) if nx >= size and 0 <= x < nx else x
        self.moved = (new_y, new_x) != (y, x)
        return new_y, new_x

    def _add_rectangle(self, box: Box) -> None:
        layer = self.boxes_layer
        if len(layer.data) == 0 or len(layer.data) != len(self.session.boxes) - 1:  # rebuild
            self.refresh_boxes()
            return
        self._syncing = True
        try:
            layer.feature_defaults = {"id": box.id, "feature": box.feature,
                                      "positive": box.positive}
            layer.add_rectangles([_rectangle(box)], **_box_style([box], self._colours()))
        finally:
            self._syncing = False

    def _colours(self) -> dict[str, str]:
        return {f.name: f.colour for f in self.session.features}

    def toggle_selected(self) -> int:
        ids = [self.boxes_layer.features["id"][i] for i in self.boxes_layer.selected_data]
        for box_id in ids:
            box = self.session.box(box_id)
            box.positive = not box.positive
            box.mask = self._mask_crop(box) if box.positive else None
        self.session.save()
        self.refresh_boxes()
        self.keep_paint_left_outside({self.session.box(i).z for i in ids})
        return len(ids)

    def refresh_boxes(self) -> None:
        self._syncing = True
        try:
            boxes = self.session.boxes
            rects = [_rectangle(b) for b in boxes]
            layer = self.boxes_layer
            layer.selected_data = set()
            layer.data = []
            if rects:
                layer.add_rectangles(rects, **_box_style(boxes, self._colours()))
            layer.features = {"id": [b.id for b in boxes], "feature": [b.feature for b in boxes],
                              "positive": [b.positive for b in boxes]}
        finally:
            self._syncing = False

    def _on_shapes_changed(self, event=None) -> None:
        if self._syncing:
            return
        layer = self.boxes_layer
        ids = list(layer.features["id"]) if "id" in layer.features else []
        known = {b.id for b in self.session.boxes}
        # a shape drawn or pasted with napari's tools takes the last box's id (napari's
        # feature defaults): taken for that box, it moved it and emptied its saved mask
        if len(ids) != len(layer.data) or len(set(ids)) != len(ids) or not set(ids) <= known:
            self.refresh_boxes()
            self.notify("boxes are placed with the + positive / - negative buttons (b, Shift-B); a "
                        "shape drawn or pasted on the boxes layer is not a box and was removed.")
            return
        kept = set(ids)
        removed = [b for b in self.session.boxes if b.id not in kept]
        touched = {b.z for b in removed}
        for box_id, vertices in zip(ids, layer.data):
            box = self.session.box(box_id)
            centre = np.asarray(vertices).mean(axis=0)
            before = (box.z, box.corner())  # the pixels it covers (centres drawn are rounded)
            box.z = int(np.clip(round(centre[0]), 0, self.shape[0] - 1))
            box.y, box.x = float(centre[1]), float(centre[2])
            if (box.z, box.corner()) != before:
                touched |= {before[0], box.z}
            if box.positive:
                box.mask = self._mask_crop(box)
        if removed:  # kept first: select-all and Delete took a slice's boxes and paint
            kept = keep_removed(self.session.folder, removed)
            self.session.remove_boxes([b.id for b in removed])
            if len(removed) > 1 or any(b.mask is not None and b.mask.any() for b in removed):
                self.notify(f"{len(removed)} box(es) removed, kept in {kept.parent.name}/: "
                            "'Put back removed boxes' restores them.")
        else:
            self.session.save()
        self.refresh_boxes()
        self.keep_paint_left_outside(touched)

    def keep_paint_left_outside(self, slices: set[int]) -> None:
        """Paint that a moved or removed box left outside every box stays: only a stroke's
        own spill is dropped (the next stroke on the slice used to wipe it, so dragging a
        box lost its painting). It is not trained on nor saved, which the user is told;
        moving the box back over it takes it into the box again."""
        left = 0
        for z in slices:
            plane = np.asarray(self.masks_layer.data[z])
            outside = (plane > 0) & ~self._allowed(plane, z)
            known = self._left_outside.pop(z, None)
            left += int(np.count_nonzero(outside if known is None else outside & ~known))
            if outside.any():
                self._left_outside[z] = outside
        if left:
            self.notify(f"{left} painted pixels now lie outside every positive box: they are "
                        "kept on screen but not trained on or saved; move the box back over "
                        "them, or erase them.")

    # masks ----------------------------------------------------------------------
    def _mask_crop(self, box: Box) -> np.ndarray:
        """The box's window of its feature's paint; only the window is compared, as this
        runs at every redraw (a whole plane per box lagged the scrolling)."""
        window = crop_slice(self.masks_layer.data[box.z], box.corner(), box.size, fill=0)
        return (window == self.session.label_of(box.feature)).astype(np.uint8)

    def redraw_masks(self) -> None:
        """The masks layer drawn anew from the session's box masks: a removed feature moves
        the labels of those after it down one, and their paint, left under the old
        numbers, was saved as empty at the next stroke."""
        lost = sum(int(np.count_nonzero(kept)) for kept in self._left_outside.values())
        self._left_outside.clear()
        if lost:  # their labels are renumbered with the features: not kept through a redraw
            self.notify(f"{lost} painted pixels outside the positive boxes were cleared.")
        with self.masks_layer.events.set_data.blocker(self._on_redrawn):  # each box's paint
            self.masks_layer.data[:] = 0  # redraws: the boxes not yet painted again read
            self._restore_masks()  # as undone strokes, and their masks were saved empty
        self.masks_layer.refresh()

    def _restore_masks(self) -> None:
        for box in self.session.boxes:
            if box.positive and box.mask is not None:
                self.paint_box_mask(box, box.mask.copy(), save=False)

    def paint_box_mask(self, box: Box, mask: np.ndarray, save: bool = True) -> None:
        """Paint a (size x size) 0/1 mask into the masks layer inside ``box`` (e.g. imported)."""
        y0, x0 = box.corner()
        ny, nx = self.shape[1:]
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(y0 + box.size, ny), min(x0 + box.size, nx)
        region = self.masks_layer.data[box.z, sy0:sy1, sx0:sx1]
        region[np.asarray(mask)[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] > 0] = \
            self.session.label_of(box.feature)
        self.masks_layer.refresh()
        box.mask = self._mask_crop(box)
        if save:
            self.session.save()

    def collect_masks(self) -> None:
        """Copy what is painted inside every positive box into the session (and save)."""
        for box in self.session.boxes:
            if box.positive:
                box.mask = self._mask_crop(box)
        self.session.save()

    def _allowed(self, plane: np.ndarray, z: int) -> np.ndarray:
        """Where paint on slice z counts: inside a positive box, in that box's feature."""
        allowed = np.zeros(plane.shape, bool)
        for box in self.session.boxes:
            if box.z == z and box.positive:
                label = self.session.label_of(box.feature)
                y0, x0 = box.corner()
                window = np.s_[max(y0, 0):max(y0 + box.size, 0), max(x0, 0):max(x0 + box.size, 0)]
                allowed[window] |= plane[window] == label
        return allowed

    def stray_paint(self, z: int) -> int:
        """Painted voxels on slice z outside every positive box of their feature."""
        plane = np.asarray(self.masks_layer.data[z])
        return int(np.count_nonzero((plane > 0) & ~self._allowed(plane, z)))

    def clip_stray_paint(self, z: int) -> int:
        """Remove paint that spilled out of the positive boxes (it would not be used),
        except what a box move left outside (``keep_paint_left_outside``)."""
        plane = self.masks_layer.data[z]
        stray = (plane > 0) & ~self._allowed(np.asarray(plane), z)
        if z in self._left_outside:
            kept = self._left_outside.pop(z) & stray  # erased or boxed again: no longer kept
            stray &= ~kept
            if kept.any():
                self._left_outside[z] = kept
        count = int(np.count_nonzero(stray))
        if count:
            plane[stray] = 0
            self.masks_layer.refresh()
        return count

    def _on_paint(self, event=None) -> None:
        """A stroke ended: keep what lies inside the boxes, quietly drop what spilled over."""
        self.clip_stray_paint(self.current_z())
        self.collect_masks()

    def _on_redrawn(self, event=None) -> None:
        """Undo and redo of a stroke emit no paint event, only a redraw: the masks are
        saved when a box's paint differs from the session's (an undone stroke came back
        after a crash, a redone one was lost)."""
        def changed(box: Box) -> bool:
            shown = self._mask_crop(box)
            return not np.array_equal(shown, box.mask if box.mask is not None
                                      else np.zeros_like(shown))

        if any(box.positive and changed(box) for box in self.session.boxes):
            self.collect_masks()

    def start_painting(self, box: Box) -> None:
        """After a positive box: the brush on the masks layer, sized for the box, its label."""
        layer = self.masks_layer
        self.viewer.layers.selection.active = layer
        layer.selected_label = self.session.label_of(box.feature)
        layer.brush_size = max(2, box.size // 8)
        layer.mode = "paint"

    # overlays ---------------------------------------------------------------------
    def overlay(self, feature: str) -> Image:
        """The feature's probability layer on this tomogram (made on first use)."""
        layer = find(self.viewer, "probability", feature=feature, tomogram=tomogram_key(self.image))
        if layer is None:
            colour = self.session.feature(feature).colour
            layer = self.viewer.add_image(
                np.zeros(self.shape, np.float16), name=overlay_name(feature),
                colormap=probability_colormap(colour, 0.5), blending="additive",
                contrast_limits=(0.0, 1.0), metadata={"threshold": 0.5},
                scale=self.image.scale, units=self.image.units, translate=self.image.translate)
            tag(layer, "probability", feature=feature, tomogram=tomogram_key(self.image))
            self.viewer.layers.selection.active = self.masks_layer
        return layer


def _box_style(boxes: list[Box], colours: dict[str, str]) -> dict:
    """Positives: an outline in the feature's colour. Negatives: grey, thin, shaded:
    they must not read as one more example of the feature."""
    return {"edge_color": [colours.get(b.feature, "#ffffff") if b.positive else NEGATIVE_EDGE
                           for b in boxes],
            "face_color": ["transparent" if b.positive else NEGATIVE_FACE for b in boxes],
            "edge_width": [2 if b.positive else 1 for b in boxes]}


def _rectangle(box: Box) -> np.ndarray:
    y0, x0 = box.corner()
    y1, x1 = y0 + box.size, x0 + box.size
    return np.array([[box.z, y0, x0], [box.z, y0, x1], [box.z, y1, x1], [box.z, y1, x0]], float)


def probability_colormap(colour: str, threshold: float) -> Colormap:
    """``layer_data.probability_colormap_spec`` as a napari Colormap."""
    return Colormap(**probability_colormap_spec(colour, threshold))
