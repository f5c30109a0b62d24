"""The failures a user can act on. The entry points print these as one line and exit 1;
anything else is a bug and keeps its traceback."""


class Error(Exception):
    """Base class: the message says what is wrong and what to do, in one line."""


class UsageError(Error):
    """Flags, a configuration or an output path that cannot work together."""


class DataError(Error):
    """The data directory is missing or does not hold what the dataset needs."""


class CheckpointError(Error):
    """No checkpoint, an unreadable one, or one (or a weights file) of another architecture."""


class TrainingError(Error):
    """Training cannot go on: a non-finite loss, a failing save, an unwritable model directory."""
