"""Keys that work whatever layer is active, and are given back when a widget closes.

napari looks a key up on the active layer first (Shapes binds b, Points
binds a), then on the viewer. A widget's keys are therefore bound on the
viewer and on each layer it works with, overriding napari there, and all
of them are released together.
"""

from __future__ import annotations

from collections.abc import Callable

from .notify import guarded, quietly


class KeyBindings:
    def __init__(self, viewer, actions: dict[str, Callable[[], object]]):
        self.actions = actions
        self.targets: list = []
        self.bind(viewer)

    def bind(self, target) -> None:
        """Bind every key on ``target`` (the viewer or a layer), once."""
        if any(target is bound for bound in self.targets):
            return
        for key, action in self.actions.items():
            target.bind_key(key, lambda _, a=action: guarded(a)(), overwrite=True)
        self.targets.append(target)

    def release(self) -> None:
        for target in self.targets:
            for key in self.actions:
                try:
                    target.bind_key(key, None)
                except (KeyError, RuntimeError):  # already gone, or Qt torn down
                    pass
        self.targets = []


def release_on_close(widget, bindings: KeyBindings) -> None:
    """Release ``bindings`` when the widget's Qt object is destroyed."""
    widget.native.destroyed.connect(lambda *_, b=bindings: quietly(b.release))

