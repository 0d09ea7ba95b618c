# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Checks shared by the data builders (`build-ipo-pairs`, `build-alttrain`): the classes of what they write, and where
they write it.

A builder that drops every harmful row (a model that never finishes its continuation) or samples more benign than
harmful examples for a method defined by a harmful majority still writes a file that trains without complaint. These
checks stop it, name the counts and the cause, and leave the decision to `allow_empty_class` / `allow_inverted_ratio`.
"""

import logging
from collections.abc import Mapping
from pathlib import Path


logger = logging.getLogger(__name__)

CLASSES = ("harmful", "benign")

ALLOW_EMPTY_CLASS_HELP = (
    "Write the data even when the harmful or the benign class comes out empty although the input (or the requested "
    "counts) had it: the counts and the cause are printed as a warning. Default: the command stops and writes nothing."
)
ALLOW_INVERTED_RATIO_HELP = (
    "Write the data even when its harmful:benign ratio comes out inverted (the majority class of the input or of the "
    "requested counts is the minority of the output), with a warning. Default: the command stops and writes nothing."
)


def class_balance_problems(counts: Mapping[str, int], expected: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """The classes that came out empty, and the inverted ratio, of `counts` against `expected`.

    Args:
        counts (`Mapping[str, int]`): Examples written per class (`"harmful"`, `"benign"`).
        expected (`Mapping[str, int]`): What they are compared to, per class: the input's rows or the requested
            counts. A class expected 0 times may come out empty; the ratio is checked when the two expected counts
            differ.

    Returns:
        `tuple[list[str], list[str]]`: The classes that came out empty, and a one-item list describing the inverted
        ratio (empty when it is not inverted).
    """
    empty = [name for name in CLASSES if expected.get(name, 0) > 0 and counts.get(name, 0) == 0]
    harmful, benign = counts.get("harmful", 0), counts.get("benign", 0)
    expected_harmful, expected_benign = expected.get("harmful", 0), expected.get("benign", 0)
    inverted = []
    if not empty and (expected_harmful - expected_benign) * (harmful - benign) < 0:
        inverted.append(f"{harmful} harmful : {benign} benign, the inverse of {expected_harmful} : {expected_benign}")
    return empty, inverted


def check_class_balance(
    counts: Mapping[str, int],
    expected: Mapping[str, int],
    *,
    what: str,
    reference: str,
    cause: str,
    allow_empty_class: bool = False,
    allow_inverted_ratio: bool = False,
) -> None:
    """Raises (or warns, where allowed) when a class of a built dataset came out empty or its ratio inverted.

    Args:
        counts (`Mapping[str, int]`): Examples written per class.
        expected (`Mapping[str, int]`): The input's rows or the requested counts per class (see
            [`class_balance_problems`]).
        what (`str`): What was built, e.g. `"IPO pairs"`.
        reference (`str`): What `expected` is, e.g. `"the input's rows"`.
        cause (`str`): Why it happened and what to change (the drop counts, the counts that keep the ratio).
        allow_empty_class (`bool`, *optional*, defaults to `False`): Warn instead of raising on an empty class.
        allow_inverted_ratio (`bool`, *optional*, defaults to `False`): Warn instead of raising on an inverted ratio.
    """
    empty, inverted = class_balance_problems(counts, expected)
    counts_text = f"{counts.get('harmful', 0)} harmful + {counts.get('benign', 0)} benign"
    expected_text = f"{reference}: {expected.get('harmful', 0)} harmful + {expected.get('benign', 0)} benign"
    problems = []
    if empty:
        problems.append(
            (
                allow_empty_class,
                f"The {what} hold no {' and no '.join(empty)} example ({counts_text}; {expected_text}).",
                "allow_empty_class",
            )
        )
    if inverted:
        problems.append(
            (
                allow_inverted_ratio,
                f"The {what} invert the harmful:benign ratio: {inverted[0]} ({reference}).",
                "allow_inverted_ratio",
            )
        )
    for allowed, message, option in problems:
        if allowed:
            logger.warning(f"{message} {cause} Written anyway (`{option}=True`).")
        else:
            raise ValueError(
                f"{message} {cause} Nothing was written. To write it as it is, set `{option}=True` (`--{option}`)."
            )


def ratio_preserving_counts(available: Mapping[str, int], requested: Mapping[str, int]) -> dict[str, int]:
    """The largest counts with the `requested` harmful:benign ratio that the `available` examples allow.

    Example:
    ```python
    >>> ratio_preserving_counts({"harmful": 40, "benign": 100}, {"harmful": 900, "benign": 100})
    {'harmful': 40, 'benign': 4}
    ```
    """
    h, b = available.get("harmful", 0), available.get("benign", 0)
    rh, rb = requested.get("harmful", 0), requested.get("benign", 0)
    if rh <= 0 or rb <= 0:
        return {"harmful": h if rh else 0, "benign": b if rb else 0}
    if h * rb <= b * rh:  # harmful examples are the scarce ones
        return {"harmful": h, "benign": min(b, max(1, h * rb // rh))}
    return {"harmful": min(h, max(1, b * rh // rb)), "benign": b}


def warn_if_inside_package(output_dir: str | Path, command: str) -> bool:
    """Warns when `output_dir` lies inside the installed `trl_presafety` package, whose bundled data (read by the tiny
    recipes and the tests) it would overwrite. Returns whether it does."""
    package_dir = Path(__file__).resolve().parent
    target = Path(output_dir).resolve()
    if target != package_dir and package_dir not in target.parents:
        return False
    logger.warning(
        f"`output_dir` {output_dir} is inside the trl_presafety package ({package_dir}): `{command}` overwrites its "
        "bundled data there, which the tiny recipes and the tests read. Write under `runs/` (the default) unless you "
        "are regenerating the bundled data on purpose."
    )
    return True
