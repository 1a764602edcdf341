"""The errors a user's settings or inputs can cause. ``main`` prints any ``FitError`` as one line
and exits with status 1; anything else is a bug and keeps its traceback, with a line that says so.

The library raises its domain errors (``SceneError``, ``WeightsError``, ...: all ``FitError``s);
``jobs/`` names the config field they came from where it knows it (``ConfigError``)."""


class FitError(Exception):
    """A condition a user can cause (bad settings, a bad input file, a run that stopped for a
    known reason); the message names the field or file."""


class ConfigError(FitError, ValueError):
    """A config field has a value the job cannot use; the message names the field."""


class RunError(FitError, RuntimeError):
    """A run stopped for a reason it understands (a non-finite loss, inputs that changed under a
    resumed run); the message says where and what."""
