"""How far each layer of one checkpoint moved from another's: an adapted model against its source.

When the alphabets differ (English source, German target), the output layer is compared on the
rows of the classes both have: the blank and the shared characters.
"""

from __future__ import annotations

import pandas as pd

from tmaps.checkpoint import LoadedCheckpoint, mismatched_tensors
from tmaps.introspect.weights import WeightMismatchError, change_table, weight_change
from tmaps.transfer.alphabet import shared_classes


def compare_checkpoints(first: LoadedCheckpoint, second: LoadedCheckpoint) -> pd.DataFrame:
    """The :func:`~tmaps.introspect.weights.change_table` of ``second`` against ``first``.

    Raises:
        WeightMismatchError: the two models differ in more than their output alphabet; the
            message lists every tensor that does not match.
    """
    start, end = first.model.state_dict(), second.model.state_dict()
    if first.alphabet != second.alphabet:
        first_rows, second_rows = shared_classes(first.alphabet, second.alphabet)
        start.update({key: start[key][first_rows] for key in ("head.weight", "head.bias")})
        end.update({key: end[key][second_rows] for key in ("head.weight", "head.bias")})
    problems = mismatched_tensors(start, end, expected_as=str(first.path), found_as=str(second.path))
    if problems:
        raise WeightMismatchError(f"{first.path} and {second.path} are different models:\n  " + "\n  ".join(problems))
    return change_table(weight_change(start, end, first.model.layer_names))
