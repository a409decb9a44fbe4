"""The thread-worker wrapper every widget starts its jobs with."""

from __future__ import annotations

import pytest

pytest.importorskip("napari")

from napari_tomoseg.errors import TomosegError  # noqa: E402
from napari_tomoseg.jobs.progress import Progress  # noqa: E402


def _job():
    yield Progress(0, 1, "working")
    return 42


def test_an_error_in_a_widgets_callback_is_one_line_and_the_job_still_ends(qtbot, monkeypatch):
    """A user's error raised while showing a result (a layer removed meanwhile, say) went
    to napari's exception hook as a traceback."""
    from napari_tomoseg._napari import notify
    from napari_tomoseg._napari.worker import start_job

    shown, ended = [], []
    monkeypatch.setattr(notify, "show_error", shown.append)

    def show(value):
        raise TomosegError(f"cannot show {value}: the layer was removed.")

    handle = start_job(_job(), on_done=show, on_finished=lambda: ended.append(True))
    qtbot.waitUntil(lambda: not handle.is_running and bool(ended), timeout=10_000)
    assert handle.outcome == "done"
    assert shown == ["cannot show 42: the layer was removed."]
