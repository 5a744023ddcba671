"""Errors raised while loading configuration."""


class SettingsError(Exception):
    """A setting has a bad value; the message is one line naming it."""
