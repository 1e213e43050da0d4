"""One exception type for every problem with the user's input."""


class DataError(ValueError):
    """Bad input data or configuration; the message names the file, row or field and the reason."""
