"""Error types the core raises, so callers never see a bare NumPy or Pillow error."""


class RendernetError(Exception):
    """Base class for every error the core raises on purpose."""


class ImageError(RendernetError):
    """An input file is not an image the core can read (corrupt, too big, empty...)."""


class ModelError(RendernetError):
    """A model folder is missing, altered, of another format version, or unsupported."""


class DataError(RendernetError):
    """A folder of images is not what the command needs (not a folder, sub-folders not the model's classes...)."""
