"""The error jobs raise for unusable config values (kept apart from ``main`` so that job modules
can import it without importing the entry point)."""


class ConfigError(ValueError):
    """A config field has a value the job cannot use; the message names the field."""
