# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""One way to check configuration values: each error names the field, the value received and the fix."""

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def fail(name: str, value: Any, fix: str) -> typing.NoReturn:
    raise ValueError(f"Invalid `{name}`: {value!r}. {fix}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        fail(name, value, f"Choose one of {choices}.")


def check_finite(name: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        fail(name, value, "Use a finite number.")


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    fix: str | None = None,
) -> None:
    """Fails unless `value` is a finite number within the bounds (`None` bound: open)."""
    if isinstance(value, float) and not math.isfinite(value):
        fail(name, value, fix or "Use a finite number.")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        right = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        fail(name, value, fix or f"Use a value in {left}, {right}.")


def _scalar_types(annotation: Any) -> tuple[tuple[type, ...], bool] | None:
    """`(accepted types, optional)` for a scalar annotation (`float`, `int | None`, `str`, `bool`), else `None`."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return None
        annotation = members[0]
    accepted = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(annotation)
    return (accepted, optional) if accepted is not None else None


def check_field_types(
    dataclass_types: Iterable[type], values: Mapping[str, Any], where: str, strings_converted: bool = False
) -> None:
    """Fails when a value has the wrong shape for its scalar field: a list, a mapping, a bool or a string where a
    number is expected. A recipe's values reach the dataclasses as YAML parsed them, unchecked, except that argparse
    converts strings (YAML reads `1e-5` as one): pass `strings_converted=True` for such values."""
    annotations: dict[str, Any] = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            annotations.setdefault(f.name, hints.get(f.name, f.type))
    for name, value in values.items():
        if name not in annotations:
            continue
        scalar = _scalar_types(annotations[name])
        if scalar is None:
            continue
        accepted, optional = scalar
        if value is None and optional:
            continue
        bad_bool = isinstance(value, bool) and bool not in accepted
        if strings_converted and isinstance(value, str):
            continue
        if bad_bool or not isinstance(value, accepted):
            kind = {(int, float): "a number", (int,): "an integer", (str,): "a string", (bool,): "true or false"}
            raise ValueError(
                f"Invalid `{name}` in {where}: {value!r} ({type(value).__name__}). It takes {kind[accepted]}"
                + (" or null" if optional else "")
                + "; write a single value."
            )
