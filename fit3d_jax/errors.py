"""The errors a job reports as one line (``main`` prints them and exits with status 1); anything
else is a bug and keeps its traceback."""


class ConfigError(ValueError):
    """A config field has a value the job cannot use; the message names the field."""


class RunError(RuntimeError):
    """A run stopped for a reason it understands (a non-finite loss, inputs that changed under a
    resumed run); the message says where and what."""
