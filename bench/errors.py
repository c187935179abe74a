"""Errors the CLI turns into one line and an exit status (bench/cli.py: ERRORS)."""
import errno


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field."""


class LaunchError(RuntimeError):
    """The cluster refused a submission (a bad partition, an sbatch option it does not know): one line."""


class DataError(RuntimeError):
    """Missing or corrupt data: the message says which path, what was expected and how to get it."""


# errno values of writes a user's machine can refuse (full disk or quota, read-only or foreign folder):
# one line naming the file, exit status 1
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
