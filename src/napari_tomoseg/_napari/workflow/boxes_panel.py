"""Section 3: boxes (placed by key, button or click) and the masks painted inside them.

Keys are bound on the layers the user works on (the tomogram, the masks
and the boxes layer) as well as on the viewer, so **b** places a box
whatever layer is active, instead of napari's own action for that layer;
every binding is released when the widget closes.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, Container, Label, PushButton, SpinBox

from ...errors import TomosegError
from ...removed_boxes import last_removal, mark_put_back
from ..keys import KeyBindings
from ..notify import guarded
from .state import Workflow



class BoxesPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        self.box_size = SpinBox(label="Box size (px)", value=64, min=16, max=512, step=8)
        self.add_positive = PushButton(text="+ positive box at cursor  [b]")
        self.add_negative = PushButton(text="- negative box at cursor  [Shift-B]")
        self.click_places = CheckBox(text="Click places boxes (Shift-click: negative)", value=True)
        self.paint_after = CheckBox(text="Paint the mask after a positive box", value=True,
                                    tooltip="selects the brush on 'tomoseg masks'; paint that "
                                            "spills over the box is dropped")
        self.slab = SpinBox(label="Slab (slices)", value=1, min=1, max=31, step=2,
                            tooltip="show the mean of this many slices around the one in view: "
                                    "ribosomes and membranes stand out of the noise")
        self.toggle = PushButton(text="Toggle selected boxes +/-")
        self.put_back_button = PushButton(text="Put back removed boxes",
                                          tooltip="the boxes (and masks) removed last")
        self.counts = Label(value="")
        self.extend([self.box_size, self.slab, self.click_places, self.paint_after,
                     self.add_positive, self.add_negative, self.toggle, self.put_back_button,
                     self.counts])
        self.box_size.changed.connect(guarded(self._set_box_size))
        self.slab.changed.connect(guarded(self.show_slab))
        self.add_positive.changed.connect(guarded(lambda: self.place_box(True)))
        self.add_negative.changed.connect(guarded(lambda: self.place_box(False)))
        self.toggle.changed.connect(guarded(self.toggle_selected))
        self.put_back_button.changed.connect(guarded(self.put_back))
        self.keys = KeyBindings(workflow.viewer, {"b": lambda: self.place_box(True),
                                                  "Shift-B": lambda: self.place_box(False)})
        workflow.viewer.mouse_drag_callbacks.append(self.on_click)

    # keys and clicks --------------------------------------------------------------------
    def bind_session_layers(self) -> None:
        """The session's image, masks and boxes layers get the keys too (they win there)."""
        c = self.workflow.controller
        for layer in (c.image, c.masks_layer, c.boxes_layer):
            self.keys.bind(layer)

    def release(self) -> None:
        """Unbind every key this panel bound and stop listening to clicks."""
        self.keys.release()
        callbacks = self.workflow.viewer.mouse_drag_callbacks
        if self.on_click in callbacks:
            callbacks.remove(self.on_click)

    def on_click(self, viewer, event):
        """With 'Click places boxes' ticked, a click on the tomogram drops a box there."""
        c = self.workflow.controller
        if not self.click_places.value or c is None or event.button != 1:
            return
        active = viewer.layers.selection.active
        if active not in (c.image, None) and str(getattr(active, "mode", "pan_zoom")) != "pan_zoom":
            return  # painting or editing shapes: the click belongs to that tool
        yield  # wait for the release: a drag (pan) places nothing
        dragged = False
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        data = c.image.world_to_data(event.position)
        positive = "Shift" not in event.modifiers
        guarded(lambda: self.place_box(positive, c.current_z(), float(data[-2]),
                                       float(data[-1])))()

    # actions ------------------------------------------------------------------------------
    def place_box(self, positive: bool, z=None, y=None, x=None):
        c = self.workflow.require_session()
        box = c.place_box(positive, z, y, x)
        if c.moved:
            self.workflow.status(f"box moved inside the tomogram: centre (y {box.y:.0f}, "
                                 f"x {box.x:.0f}), so that all of it lies on the slice")
        if positive and self.paint_after.value:
            c.start_painting(box)
        self.workflow.notify_changed()
        return box

    def toggle_selected(self) -> None:
        self.workflow.require_session().toggle_selected()
        self.workflow.notify_changed()

    def put_back(self) -> int:
        """The boxes of the last removal (``removed_boxes``) back in the session, with their
        masks; how many."""
        c = self.workflow.require_session()
        boxes, path = last_removal(c.session.folder, {b.id for b in c.session.boxes})
        if path is None:
            raise TomosegError("no removed boxes to put back.")
        gone = sorted({b.feature for b in boxes} - set(c.session.feature_names()))
        if gone:  # their masks would be drawn under a label the session no longer has
            raise TomosegError(f"the removed boxes belong to {', '.join(map(repr, gone))}, no "
                               "longer a feature of this session (renamed or removed): add "
                               "it again under that name to put them back.")
        c.session.boxes.extend(boxes)
        c.session.save()
        mark_put_back(path)  # once they are saved: a failed save still offers them
        c.refresh_boxes()
        c.keep_paint_left_outside({b.z for b in boxes})  # their paint is inside them again:
        c.redraw_masks()  # not 'cleared' by the redraw
        self.workflow.notify_changed()
        self.workflow.status(f"{len(boxes)} removed box(es) put back")
        return len(boxes)

    def show_slab(self, *args) -> None:
        """A thick slab in the annotation view: napari's mean projection over z."""
        c = self.workflow.require_session()
        n = int(self.slab.value)
        dims = self.workflow.viewer.dims
        thickness = list(dims.thickness)
        thickness[0] = n * float(c.image.scale[0])
        dims.thickness = tuple(thickness)
        c.image.projection_mode = "mean" if n > 1 else "none"

    def _set_box_size(self, *args) -> None:
        c = self.workflow.controller
        if c:
            c.session.box_size = int(self.box_size.value)
            c.session.save()

    def refresh(self) -> None:
        c = self.workflow.controller
        if c is None:
            return
        lines = [f"{name}: {pos} positive, {neg} negative"
                 for name in c.session.feature_names() for pos, neg in [c.session.counts(name)]]
        self.counts.value = "\n".join(lines)
