"""Exceptions with messages written for the person at the keyboard.

Every error a user can cause (a bad file, a bad setting) is one of these,
so the CLI and the napari plugin can show the message without a traceback.
"""


class TomosegError(Exception):
    """Base class: the message alone explains the problem and what to do."""


class InvalidVolumeError(TomosegError, ValueError):
    """A volume file cannot be used (not MRC, truncated, wrong shape, ...)."""


class InvalidCoordinatesError(TomosegError, ValueError):
    """A particle coordinate file or table cannot be used."""


class InvalidSettingsError(TomosegError, ValueError):
    """A parameter is out of its meaningful range."""
