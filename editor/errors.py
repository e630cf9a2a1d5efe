"""The editor's user-facing errors (light: no torch import)."""


class EditorError(ValueError):
    """A user mistake or unusable input for the editor; one line naming the problem and the fix."""


class ImageError(EditorError):
    """An input image cannot be used; the message names the file and the problem."""


def missing_image(path) -> ImageError:
    return ImageError(f"image {str(path)!r} does not exist")


class ComponentLoadError(EditorError):
    """A model component (the captioner, …) cannot be loaded. Not a per-image failure: a batch stops at once with
    this one line, which names the component and how to do without it or fix it."""


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says how to fix it."""
