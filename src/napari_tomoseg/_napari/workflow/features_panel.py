"""Section 2: the session's features (add, rename, recolour, remove) and the active one."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, LineEdit, PushButton
from napari.utils.notifications import show_info

from ...errors import TomosegError
from ...nn.model_file import save_model
from ..layer_tags import layers_with, tag, tag_of, tomogram_key
from ..session_layers import follow_feature
from ..confirm import agrees
from ..notify import guarded
from .state import Workflow


class FeaturesPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        # choices from a function: napari calls reset_choices() on docked containers
        self.feature = ComboBox(label="Feature", choices=self._names)
        self.new_name = LineEdit(label="Name", value="")
        self.add_feature = PushButton(text="Add feature")
        self.rename_feature = PushButton(text="Rename")
        self.remove_feature = PushButton(text="Remove")
        self.colour = LineEdit(label="Colour", value="")
        self.recolour = PushButton(text="Set colour")
        self.extend([self.feature, self.new_name,
                     Container(widgets=[self.add_feature, self.rename_feature,
                                        self.remove_feature], layout="horizontal", labels=False),
                     Container(widgets=[self.colour, self.recolour], layout="horizontal")])
        self.feature.changed.connect(guarded(self._on_feature))
        self.add_feature.changed.connect(guarded(self.add))
        self.rename_feature.changed.connect(guarded(self.rename))
        self.remove_feature.changed.connect(guarded(self._remove_asking))
        self.recolour.changed.connect(guarded(self.set_colour))
        self.on_active: list = []  # called with the feature made active by the user

    def _names(self, widget=None) -> list[str]:
        c = self.workflow.controller
        return c.session.feature_names() if c else []

    def refresh(self) -> None:
        c = self.workflow.controller
        if c is None:
            return
        active = c.active  # resetting the choices fires _on_feature: keep the intended one
        self.feature.reset_choices()
        if active in c.session.feature_names():
            self.feature.value = active
            c.set_active(active)

    def _on_feature(self, *args) -> None:
        c = self.workflow.controller
        if c and self.feature.value:
            c.set_active(self.feature.value)
            for listener in self.on_active:
                listener(self.feature.value)

    def add(self) -> None:
        c = self.workflow.require_session()
        feature = c.session.add_feature(
            self.new_name.value or f"feature {len(c.session.features) + 1}", self.colour.value or None)
        c.refresh_colours()
        c.set_active(feature.name)
        self.workflow.notify_changed()

    def rename(self) -> None:
        c = self.workflow.require_session()
        old, new = self.feature.value, self.new_name.value.strip()
        if self.workflow.busy:
            raise TomosegError("a job is running: stop it before renaming a feature.")
        c.session.rename_feature(old, new)
        models, thresholds = self.workflow.models, self.workflow.thresholds
        if old in models:  # the model, its file and its maps carry the new name too
            model = models.pop(old)
            model.feature = new
            save_model(model, c.session.model_path(new))
            c.session.register_model(new, fresh=False)
            models[new] = model
        if old in thresholds:
            thresholds[new] = thresholds.pop(old)
        for layer in layers_with(self.workflow.viewer, "probability", feature=old,
                                 tomogram=tomogram_key(c.image)):  # not another session's
            attributes = {k: v for k, v in tag_of(layer).items() if k != "role"}
            tag(layer, "probability", **{**attributes, "feature": new})
            layer.name = layer.name.replace(old, new)
        follow_feature(self.workflow.viewer, c.session.folder, old, new)
        c.active = c.session.active  # the session's rename moved it (refresh selects it)
        c.refresh_colours()
        self.workflow.notify_changed()

    def _remove_asking(self) -> None:
        """The button: a feature's boxes and masks are work, so it asks first."""
        c = self.workflow.require_session()
        name = self.feature.value
        positives, negatives = c.session.counts(name) if name else (0, 0)
        if name and agrees(self.native, "Remove feature?",
                           f"Remove '{name}' with its {positives + negatives} boxes? Its boxes, "
                           "model, map and picks are set aside in the session's removed/ "
                           "folder, not deleted."):
            self.remove()

    def remove(self) -> None:
        c = self.workflow.require_session()
        name = self.feature.value
        if self.workflow.busy:
            raise TomosegError("a job is running: stop it before removing a feature.")
        c.collect_masks()  # the latest paint, under the labels it was painted with
        removed, aside = c.session.remove_feature(name)
        c.redraw_masks()  # labels follow the feature list: those after it moved down one
        open_picks = follow_feature(self.workflow.viewer, c.session.folder, name, None)
        # its map went aside with its files: shown on, a new feature of the name would
        # take it for its own (Merge and Pick included)
        for layer in list(layers_with(self.workflow.viewer, "probability", feature=name,
                                      tomogram=tomogram_key(c.image))):
            self.workflow.viewer.layers.remove(layer)
        self.workflow.models.pop(name, None)
        self.workflow.thresholds.pop(name, None)  # not handed to a new feature of that name
        c.active = c.session.active  # the session's removal chose it (refresh selects it)
        c.refresh_colours()
        self.workflow.notify_changed()
        kept = (f" Its boxes and files were set aside in {aside}" + (
            " (a session of this feature alone: open it, or train --boxes it)." if removed
            else ".")) if aside else ""
        still = (" Its picks or filaments layers stay open, no longer saved with the session."
                 if open_picks else "")
        show_info(f"Removed '{name}' and its {removed} boxes.{kept}{still}")

    def set_colour(self) -> None:
        c = self.workflow.require_session()
        colour = self.colour.value.strip()
        if not (len(colour) == 7 and colour.startswith("#")):
            raise TomosegError("give the colour as #rrggbb, e.g. #f2c94c.")
        c.session.recolour_feature(self.feature.value, colour)
        c.refresh_colours()
