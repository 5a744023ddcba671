"""Errors raised while loading configuration."""


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming it."""


class CannotListen(SettingsError):
    """The API cannot listen on the configured host and port; the message says why."""
