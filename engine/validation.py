"""Validation rules for every model that reads JSON from a client (API bodies, task parameters,
data source definitions).

pydantic's lax mode takes `true` and `false` for numbers (`priority: true` became 1): a JSON
boolean is not a number, so `NoBoolNumbers` refuses one for any field typed as a number, naming
the field, while keeping the rest of lax mode (a JSON string for a datetime, say).
"""

from __future__ import annotations

import functools
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator

_NUMBERS = (int, float)


class NoBoolNumbers(BaseModel):
    """Mixin: a boolean given for a field typed `int` or `float` (or optional ones) is refused."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in _numeric_fields(cls):
            raise ValueError("a boolean is not a number")
        return value


@functools.cache
def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of `model` typed as a number and not also as a boolean."""
    return frozenset(
        name for name, field in model.model_fields.items() if _is_number(field.annotation)
    )


def _is_number(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return _is_number(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        options = get_args(annotation)
        if bool in options:
            return False
        return any(_is_number(option) for option in options)
    is_type = isinstance(annotation, type)
    return is_type and issubclass(annotation, _NUMBERS) and annotation is not bool
