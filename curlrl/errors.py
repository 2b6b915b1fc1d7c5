"""The one exception family of curlrl.

Every mistake a user can make (bad config key, unknown task, corrupt checkpoint or
dataset, missing renderer) raises a :class:`CurlrlError` subclass with a message that
names the problem. The CLI prints that message on one line and exits with code 2.
"""


class CurlrlError(Exception):
    """Base class: a user-facing error whose message is one clear line."""


class ConfigError(CurlrlError):
    """A configuration key is unknown, has the wrong type or an impossible value."""


class CheckpointError(CurlrlError):
    """A checkpoint or encoder file is missing, corrupt or of another shape."""


class DatasetError(CurlrlError):
    """An offline dataset is missing, empty, corrupt or of mismatched shapes."""


class EnvError(CurlrlError):
    """An environment cannot be built: unknown task or no working renderer."""


class WriteError(CurlrlError):
    """A run's file (config, log row, TensorBoard events, video) cannot be written: no space
    left, a read-only volume, the file size limit, no permission. (Checkpoint writes raise
    :class:`CheckpointError`, which also says which checkpoint stays current.)"""


class DivergenceError(CurlrlError):
    """Training diverged: a loss or a parameter is not finite (NaN or infinite). The run
    stops before it could overwrite its last good checkpoint."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of a lower-level failure."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_error(path, exc: BaseException) -> WriteError:
    """The one line for a failed write of ``path``: the file and the cause (the OS's words
    where there are some: "No space left on device", "File too large", "Read-only file system")."""
    cause = getattr(exc, "strerror", None) or first_line(exc)
    return WriteError(f"cannot write {path}: {cause}")
