"""The errors a user can cause, in one place.

Everything a user can get wrong (a value, a flag, a config, a checkpoint, a file) raises a
`UserError`, a `ValueError` subclass, with one line that names the culprit and the fix. The scripts
turn exactly these (and the `OSError`s of files and disks) into `error: ...` with exit status 2; any
other exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input that the user can fix: the message names the culprit and what to do."""


class ConfigError(UserError):
    """A config that cannot be found, parsed or validated."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, refused, or does not fit the model."""
