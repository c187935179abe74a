"""Errors the CLI turns into one line and an exit status (bench/cli.py: ERRORS)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field."""
