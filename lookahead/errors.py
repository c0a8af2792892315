"""User-facing errors. Each renders as one line that names where the problem is and how to fix it."""


class LookaheadError(Exception):
    """Base class: the entry points print `str(error)` on one line and exit non-zero."""


class DataError(LookaheadError, ValueError):
    """A data file or example is malformed. The message names the file, line or example, and field."""

    def __init__(self, source: str, message: str, line: int | None = None, field: str | None = None):
        where = source if line is None else f"{source}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
        self.source, self.line, self.field = source, line, field


class ConfigError(LookaheadError, ValueError):
    """A config value is invalid. The message names the key, the value and the fix."""


class EvaluationError(LookaheadError):
    """An evaluation could not produce a trustworthy number (e.g. too many replies the judge could not score)."""


class TrainingDiverged(LookaheadError):
    """The loss became NaN or inf; the step is named and no checkpoint is written after it."""


class CheckpointWriteError(LookaheadError):
    """A checkpoint could not be written (disk full, permissions); the previous checkpoints are untouched."""


class Interrupted(LookaheadError):
    """SIGINT or SIGTERM stopped the run after saving a checkpoint. Exits with 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
