"""Ask before a widget replaces or sets aside what the user made earlier.

Files typed into a path field, or results of an earlier run in the same
folder, were replaced without a word; a browse dialog asks by itself, a
typed name and a second run did not.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def may_replace(parent, paths: Iterable[Path], what: str) -> bool:
    """True when none of ``paths`` exists, or the user agrees to replace those that do."""
    existing = [Path(p) for p in paths if Path(p).is_file()]
    if not existing:
        return True
    shown = ", ".join(p.name for p in existing[:3]) + (
        f" and {len(existing) - 3} more" if len(existing) > 3 else "")
    return agrees(parent, "Replace files?",
                  f"{shown} in {existing[0].parent} exist. Replace them with {what}?")


def agrees(parent, title: str, question: str) -> bool:
    """The user's Yes to ``question``, asked in a modal box."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question)
    return answer == QMessageBox.StandardButton.Yes
