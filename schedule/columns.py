"""Records whose fields are table columns: each field is defined once, with its column.

    class TaskRecord(TableRow):
        id: str = column(String(36), primary_key=True, new=New.ID)
        total_rows: int | None = column(BigInteger)
        ...

A `TableRow` subclass is a frozen dataclass (type checkers know it, `dataclass_transform`).
Everything else about its fields is derived from that one class: the SQLAlchemy columns of its
table (`table_columns`; a column is NOT NULL unless the field's type admits None), how a stored
value becomes a field (`Kind`: JSON, time, boolean, enum), the record built from a row
(`from_row`) or from converted values (`from_values`), and, through `RowField.api_name` and
`ColumnSpec.doc`, what an API answer shows of it. `ColumnSpec.new` says what a new row holds;
the record's own module gives it meaning (see `schedule.task`).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, dataclass_transform

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Integer, Text, false, true
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.type_api import TypeEngine

from schedule.clock import utc

# Microsecond precision on MySQL; SQLite stores ISO strings that sort correctly.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Kind(enum.Enum):
    """How a stored value is converted to and from its field."""

    PLAIN = "plain"  # strings and numbers: as the driver gives them
    JSON = "json"  # a JSON column (SQLAlchemy's `JSON`): any JSON value
    TIME = "time"  # a time column: naive UTC stored, aware UTC in the record
    BOOL = "bool"  # a boolean column: 0/1 on some drivers, `bool` in the record
    ENUM = "enum"  # a string column whose field is an `Enum`: the member in the record


@dataclass(frozen=True)
class ColumnSpec:
    """What `column()` records about a field: its column, how the API shows it, and its value
    in a new row."""

    type: TypeEngine[Any]
    primary_key: bool = False
    unique: bool = False
    server_default: int | bool | None = None
    api: str | None = None  # the name in API answers; None: the field's own name
    internal: bool = False  # never shown by the API
    doc: str | None = None  # the API's description of the field
    new: Any = None  # the value of a new row (meaning given by the record's module)


def column(
    type_: TypeEngine[Any] | type[TypeEngine[Any]],
    *,
    primary_key: bool = False,
    unique: bool = False,
    server_default: int | bool | None = None,
    api: str | None = None,
    internal: bool = False,
    doc: str | None = None,
    new: Any = None,
) -> Any:
    """A field of a `TableRow` and its column. Without `new`, a new row takes the column's
    `server_default` (NULL when there is none). `api` renames the field in API answers,
    `internal` leaves it out of them, `doc` describes it there."""
    instance = type_() if isinstance(type_, type) else type_
    if new is None:
        new = server_default
    spec = ColumnSpec(instance, primary_key, unique, server_default, api, internal, doc, new)
    return field(metadata={_SPEC: spec})


@dataclass(frozen=True)
class RowField:
    """One field of a `TableRow`, with what is derived from its definition."""

    name: str
    index: int  # position in field order (the order of the table's columns too)
    spec: ColumnSpec
    hint: Any  # the field's Python type
    kind: Kind
    nullable: bool  # the type admits None (or is Any)
    load: Callable[[Any], Any] | None = None  # a stored value (not None) to the field's value

    @property
    def api_name(self) -> str | None:
        """The field's name in API answers, or None when the API does not show it."""
        if self.spec.internal:
            return None
        return self.spec.api or self.name

    @property
    def enum(self) -> type[enum.Enum]:
        """The field's `Enum` (for `Kind.ENUM` fields)."""
        assert isinstance(self.hint, type) and issubclass(self.hint, enum.Enum)
        return self.hint


@dataclass_transform(frozen_default=True, field_specifiers=(column,))
class TableRow:
    """Base of records whose every field is a column (see the module docstring)."""

    _row_fields: ClassVar[tuple[RowField, ...]] = ()
    _names: ClassVar[tuple[str, ...]] = ()
    _getter: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _converters: ClassVar[tuple[tuple[int, Callable[[Any], Any]], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)
        hints = typing.get_type_hints(cls)
        cls._row_fields = tuple(_row_field(f, i, hints[f.name]) for i, f in enumerate(_fields(cls)))
        cls._names = tuple(f.name for f in cls._row_fields)
        cls._getter = operator.itemgetter(*cls._names)
        cls._converters = tuple((f.index, f.load) for f in cls._row_fields if f.load is not None)

    @classmethod
    def row_fields(cls) -> tuple[RowField, ...]:
        """The fields, in order."""
        return cls._row_fields

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Self:
        """Build from a row mapping as SQLAlchemy reads it (JSON already decoded)."""
        values = list(cls._getter(row))
        for index, convert in cls._converters:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return cls.from_values(values)

    def replaced(self, names: Sequence[str], values: Sequence[Any]) -> Self:
        """A copy whose fields `names` hold `values` (converted already), the others this
        record's: `dataclasses.replace` without its keywords and its call of `__init__`."""
        record = object.__new__(type(self))
        record.__dict__.update(self.__dict__)
        record.__dict__.update(zip(names, values, strict=True))
        return record

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> Self:
        """Build from values already converted, in field order, as the generated `__init__`
        would (a `TableRow` has no `__post_init__`), minus its `object.__setattr__` per field:
        those were a third of the cost of building a task record, which the engine does twice
        per task (create and claim)."""
        record = object.__new__(cls)
        record.__dict__.update(zip(cls._names, values, strict=True))
        return record


def table_columns(row: type[TableRow]) -> list[Column[Any]]:
    """The columns of `row`'s table, in field order."""
    return [
        Column(
            f.name,
            f.spec.type,
            primary_key=f.spec.primary_key,
            nullable=f.nullable and not f.spec.primary_key,
            unique=f.spec.unique or None,
            server_default=_server_default(f.spec.server_default),
        )
        for f in row.row_fields()
    ]


_SPEC = "syncd.column"


def _fields(cls: type) -> list[Any]:
    out = dataclasses.fields(cls)
    missing = [f.name for f in out if _SPEC not in f.metadata]
    if missing:
        raise TypeError(f"{cls.__name__}: fields {missing} are not defined with column()")
    return list(out)


def _row_field(definition: Any, index: int, hint: Any) -> RowField:
    spec: ColumnSpec = definition.metadata[_SPEC]
    if isinstance(spec.type, JSON):
        kind = Kind.JSON
    elif isinstance(spec.type, DateTime):
        kind = Kind.TIME
    elif isinstance(spec.type, Boolean):
        kind = Kind.BOOL
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        kind = Kind.ENUM
    else:
        kind = Kind.PLAIN
    load = hint if kind is Kind.ENUM else _FROM_STORED.get(kind)
    return RowField(definition.name, index, spec, hint, kind, _admits_none(hint), load)


def _admits_none(hint: Any) -> bool:
    if hint is Any:
        return True
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(hint)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:  # the common case, made cheap
        return value.replace(tzinfo=UTC)
    return utc(value) or value


#: Stored value -> field value, by kind (JSON comes decoded, plain values as they are).
_FROM_STORED: dict[Kind, Callable[[Any], Any]] = {Kind.TIME: _aware, Kind.BOOL: bool}


def _server_default(value: int | bool | None) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return true() if value else false()
    return str(value)
