"""The exceptions for every problem with the user's input: the CLIs print them as one `error:` line, exit 2."""


class DataError(ValueError):
    """Bad input data or configuration; the message names the file, row or field and the reason."""


class ConfigError(DataError):
    """A bad option or config value, a refused resume, a run directory in use or owned by another model."""
