"""The editor's user-facing errors (light: no torch import)."""


class EditorError(ValueError):
    """A user mistake or unusable input for the editor; one line naming the problem and the fix."""


class ImageError(EditorError):
    """An input image cannot be used; the message names the file and the problem."""
