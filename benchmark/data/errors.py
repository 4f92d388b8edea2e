"""The data floor's error."""


class DataError(Exception):
    """A problem with the image list or the image files; the message says which files and why."""
