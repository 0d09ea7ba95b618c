# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""One column, one meaning: the harmfulness of a prompt (`harmful`) is not the safe model's decision (`safety_label`).

- `safety_label` (written by `trl-presafety label`): what the safe model (the LRM with thinking off) *did* on the
  prompt, read by the refusal classifier: 1 refused, 0 complied. The PreSafe head's signal.
- `harmful`: what the prompt *is*, from its source (a harmful or a benign set, a benchmark's label, a guard judge):
  1 harmful, 0 benign. IPO (which traces to intervene), AltTrain (which judgment to write) and the GRPO safety rewards
  (refusal right or wrong) are defined on it.

They differ exactly where the safe model is wrong: a harmful prompt it answered has `safety_label` 0, a benign prompt
it refused has `safety_label` 1. Reading the decision as harmfulness makes IPO prefer the unsafe trace there, AltTrain
write "harmless, so I can help" and GRPO reward compliance, so the methods that need harmfulness stop with an error
on data that has only the decision.
"""

import math
import numbers
from collections.abc import Iterable
from typing import Any


HARMFUL_COLUMN = "harmful"
# The PreSafe signal columns of `trl-presafety label`: the safe model's decision, never harmfulness
DECISION_COLUMNS = ("safety_label", "safety_label_prob")
HOW_TO_ADD_HARMFUL = (
    "Add a 'harmful' column (1 harmful, 0 benign) from each prompt's source: `trl-presafety label --harmful 1` (or "
    "`--harmful 0`) when every prompt of the labeled file is harmful (or benign), the `harmful` field of the "
    "evaluation datasets (`trl_presafety.evaluation.load_eval_datasets`), or a guard model's verdict per prompt"
)


def parse_harmful(value: Any, column: str = HARMFUL_COLUMN, index: int | None = None) -> int | None:
    """Harmfulness as 1 / 0 from an int 1/0, a bool or a float 1.0/0.0 (parquet and pandas turn ints with gaps into
    floats); `None` for a missing value (`None`, NaN). Anything else fails, naming the row, the column and the value.

    Example:
    ```python
    >>> [parse_harmful(v) for v in (1, 0, True, 0.0, None)]
    [1, 0, 1, 0, None]
    ```
    """
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and value in (0, 1):  # numpy scalars too
        return int(value)
    where = f"Row {index}: column" if index is not None else "Column"
    raise ValueError(
        f"{where} '{column}' holds {value!r}; harmfulness is 1 (harmful prompt) or 0 (benign prompt), or a bool. "
        "A probability such as the classifier's P(refusal) is the safe model's decision (`safety_label_prob`), not "
        "harmfulness. Map the column to 1/0 first."
    )


def check_harmful_column_name(column: str, field_name: str) -> None:
    """Refuses a harmfulness setting that names a decision column: reading the decision as harmfulness is the
    confusion this module exists to prevent."""
    if column in DECISION_COLUMNS:
        raise ValueError(
            f"Invalid `{field_name}`: {column!r}. That column is the safe model's refusal decision (1 refused, 0 "
            "complied; written by `trl-presafety label`), not the harmfulness of the prompt: a harmful prompt the safe "
            f"model answered has {column} 0. {HOW_TO_ADD_HARMFUL}, and set `{field_name}` to it (default 'harmful')."
        )


def missing_harmful_message(column: str, columns: Iterable[str], method: str, field_name: str) -> str:
    """The error for data without the harmfulness column `column`. When the data has the decision columns instead, it
    says why they cannot stand in for it."""
    columns = sorted(columns)
    message = (
        f"{method} needs the harmfulness of each prompt in column '{column}' (1 harmful, 0 benign), but the data has "
        f"only the columns {columns}. "
    )
    decision = [c for c in DECISION_COLUMNS if c in columns]
    if decision:
        message += (
            f"Its {' / '.join(repr(c) for c in decision)} column is the safe model's refusal decision (1 refused, 0 "
            "complied; written by `trl-presafety label`), not harmfulness: a harmful prompt the safe model answered "
            "has safety_label 0, and reading it as harmfulness would train the model to comply there. "
        )
    return message + f"{HOW_TO_ADD_HARMFUL}; or set `{field_name}` to the column that holds harmfulness."


def check_harmful_column(columns: Iterable[str], column: str, method: str, field_name: str) -> None:
    """Raises the [`missing_harmful_message`] error when `column` is not among `columns`."""
    columns = list(columns)
    if column not in columns:
        raise ValueError(missing_harmful_message(column, columns, method, field_name))
