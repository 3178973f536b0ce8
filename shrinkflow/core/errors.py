"""User-facing errors: the CLI turns these into a short message and exit code 2."""


class UserError(Exception):
    """A problem the user can fix (config or data), reported without a traceback."""


class ConfigError(UserError):
    """The YAML config, or a --set override, is invalid."""


class DataError(UserError):
    """The dataset cannot be used: unreadable, malformed, or unsuitable for training."""
