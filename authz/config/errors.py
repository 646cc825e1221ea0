"""Configuration errors as a person fixes them: the file, the line and column, the key, and
what to do — `unknown key jwks_flie (did you mean jwks_file?)` rather than the validation
library's wording."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

Location = tuple[int | str, ...]


def format_validation_error(
    source: str,
    error: ValidationError,
    model: type[BaseModel],
    positions: dict[Location, tuple[int, int]] | None = None,
) -> str:
    """One line per problem: `location (line L, column C): message`."""
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        location: Location = tuple(item["loc"])
        where = ".".join(str(part) for part in location) or "(top level)"
        position = (positions or {}).get(location)
        if position is not None:
            where += f" (line {position[0]}, column {position[1]})"
        lines.append(f"  {where}: {_message(item, location, model)}")
    return "\n".join(lines)


def _message(item: Any, location: Location, model: type[BaseModel]) -> str:
    if item["type"] == "extra_forbidden" and location and isinstance(location[-1], str):
        key = location[-1]
        known = _field_names(model, location[:-1])
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown key {key}{hint}"
    message: str = item["msg"]
    return message.removeprefix("Value error, ")


def _field_names(model: type[BaseModel], path: Location) -> set[str]:
    """The keys the configuration accepts at `path` (a mapping's location); empty when the
    path leads nowhere known."""
    current: Any = model
    for part in path:
        current = _step(current, part)
        if current is None:
            return set()
    return set(current.model_fields) if _is_model(current) else set()


def _step(annotation: Any, part: int | str) -> Any:
    if _is_model(annotation):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return _unwrap(field.annotation) if field is not None else None
    origin = typing.get_origin(annotation)
    if origin is dict:
        return _unwrap(typing.get_args(annotation)[1])
    if origin is list:
        return _unwrap(typing.get_args(annotation)[0])
    return None


def _unwrap(annotation: Any) -> Any:
    """`X | None` → `X`; `Annotated[X, …]` → `X`; a union with one model → that model."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        models = [member for member in members if _is_model(member)]
        if len(models) == 1:
            return models[0]
        return members[0] if len(members) == 1 else None
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def yaml_positions(text: str) -> dict[Location, tuple[int, int]]:
    """Where each key and value of a YAML document starts (1-based line and column), by
    location; for a key, its own position (where an unknown key is to be found)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    positions: dict[Location, tuple[int, int]] = {}
    if node is not None:
        for location, mark in _walk(node, ()):
            positions.setdefault(location, (mark.line + 1, mark.column + 1))
    return positions


def _walk(node: yaml.Node, location: Location) -> Iterator[tuple[Location, yaml.Mark]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                inner = (*location, key.value)
                yield inner, key.start_mark
                yield from _walk(value, inner)
    elif isinstance(node, yaml.SequenceNode):
        items: Sequence[yaml.Node] = node.value
        for index, value in enumerate(items):
            inner = (*location, index)
            yield inner, value.start_mark
            yield from _walk(value, inner)
