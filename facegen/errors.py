"""User-facing errors.

Anything a user can cause (a bad path, a malformed dataset, an unknown config key) raises
:class:`FacegenError` with a one-line message that names the culprit (file, line, key). The CLI prints it
as ``error: <message>`` and exits with status 2; everything else is a bug and keeps its traceback.
"""


class FacegenError(Exception):
    """A mistake in the user's input, reported as one line without a traceback."""


class DatasetError(FacegenError):
    """A dataset on disk is malformed or incomplete (message names the file and, where known, the line)."""


class ConfigError(FacegenError):
    """A config file or override is invalid (message names the dotted key)."""
