"""Errors of the data sources: reading spreadsheets, CSV files and JSON APIs.

Handlers turn a `SourceError` into a failed task (its message is the task's error) and a
`RowError` into a per-record error; the API maps `UnsupportedFormatError` to 415 and
`UnpackLimitError` to 413 (a size limit) or 422.
"""

from __future__ import annotations

from collections.abc import Sequence


class SourceError(Exception):
    """The data source could not be read."""

    code = "source_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class SheetError(SourceError):
    """The spreadsheet or CSV file could not be read."""

    code = "sheet_error"


class UnpackLimitError(SheetError):
    """The workbook would unpack beyond a configured limit (a zip bomb, or too big a file)."""

    code = "unpack_limit"

    def __init__(self, label: str, problems: Sequence[str], *, too_large: bool = False) -> None:
        self.problems = list(problems)
        self.too_large = too_large
        super().__init__(f"{label}: refused before reading: {'; '.join(self.problems)}")


class MissingColumnsError(SheetError):
    """Required columns are missing from the header row."""

    code = "missing_columns"

    def __init__(self, missing: Sequence[str], found: Sequence[str]) -> None:
        self.missing = list(missing)
        self.found = list(found)
        shown = ", ".join(repr(h) for h in self.found) or "none"
        super().__init__(
            f"missing required column(s): {', '.join(self.missing)}; headers found: {shown}"
        )


ACCEPTED_UPLOAD_FORMATS = "accepted formats: .xlsx (Excel 2007+ workbook)"


class UnsupportedFormatError(SourceError):
    """The file is not in an accepted format."""

    code = "unsupported_format"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}; {ACCEPTED_UPLOAD_FORMATS}")


class RowError(SourceError):
    """One record is invalid; the others are still imported."""

    code = "invalid_row"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class HttpStatusError(SourceError):
    """The HTTP source answered with an error status that retrying will not fix."""

    code = "http_status"

    def __init__(self, url: str, status: int, body: str = "") -> None:
        self.url = url
        self.status = status
        tail = f": {body}" if body else ""
        super().__init__(f"GET {url} answered HTTP {status}{tail}")


class MalformedPageError(SourceError):
    """A page of the HTTP source is not the JSON shape the configuration describes."""

    code = "malformed_page"

    def __init__(self, url: str, page: int, reason: str) -> None:
        self.url = url
        self.page = page
        self.reason = reason
        super().__init__(f"page {page} ({url}): {reason}")


class SourceUnavailableError(SourceError):
    """The source could not be reached even after retrying; a later attempt may succeed."""

    code = "source_unavailable"

    def __init__(self, url: str, attempts: int, last_error: str) -> None:
        self.url = url
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"GET {url} failed after {attempts} attempt(s): {last_error}")
