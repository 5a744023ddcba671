"""The installed version of syncd (its distribution's metadata)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    """The version pip installed, or "unknown" for a source tree that was never installed.
    Reads package metadata from disk: call it off the event loop."""
    try:
        return version("syncd")
    except PackageNotFoundError:
        return "unknown"
