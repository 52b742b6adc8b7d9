"""What ``tmaps-compare first=A.ckpt second=B.ckpt`` does: how far each layer of B moved from A.

For a transfer run, A is the source checkpoint (e.g. English) and B the adapted one (German).
When the alphabets differ, the output layer is compared on the rows of the classes both have
(the blank and the shared characters).
"""

from __future__ import annotations

import os

import pandas as pd

from tmaps.checkpoint import LoadedCheckpoint, load_checkpoint, mismatched_tensors
from tmaps.introspect.weights import WeightMismatchError, change_table, weight_change
from tmaps.transfer import shared_classes


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


def compare(first_path: str | os.PathLike, second_path: str | os.PathLike, csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load both checkpoints, print the change table of the second against the first, optionally write it as CSV.

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        ValueError: a checkpoint cannot be read, or the two are different models.
    """
    first, second = load_checkpoint(first_path), load_checkpoint(second_path)
    table = compare_checkpoints(first, second)
    print(f"A = {first.path} (alphabet {first.alphabet.chars!r}, step {first.global_step})")
    print(f"B = {second.path} (alphabet {second.alphabet.chars!r}, step {second.global_step})")
    if first.alphabet != second.alphabet:
        print("head: compared on the blank and the characters both alphabets have")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    if csv:
        table.to_csv(csv, index=False)
    return table
