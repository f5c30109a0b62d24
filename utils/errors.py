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


def first_line(error):
    """The first line of `error`'s message (an OpError's own message, without the node listing
    TensorFlow appends after a tab), or its type's name if it has none: errors from libraries
    become one line of ours."""
    message = getattr(error, 'message', None) or str(error)
    lines = message.strip().splitlines()
    first = lines[0].split('\t')[0].strip() if lines else ''
    return first or type(error).__name__


class OutputError(Error):
    """An output file or stream that could not be written (a full disk, a closed stream)."""
