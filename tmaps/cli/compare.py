"""``tmaps-compare A.ckpt B.ckpt``: how far each layer of B moved from A.

For a transfer run, A is the source checkpoint (e.g. English) and B the adapted one (German).
When the alphabets differ, the output layer is compared on the rows of the classes both have
(the blank and the shared characters).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tmaps.introspect.weights import WeightMismatchError, change_table, mismatched_tensors, weight_change
from tmaps.training.checkpoint import LoadedCheckpoint, load_checkpoint
from tmaps.transfer import shared_classes


def compare_checkpoints(first: LoadedCheckpoint, second: LoadedCheckpoint):
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tmaps-compare",
        description="Per layer of two compatible tmaps checkpoints: relative weight change ||B - A|| / ||A|| "
        "and each filter's cosine similarity to A.",
    )
    parser.add_argument("first", help="the starting checkpoint A (e.g. the English source)")
    parser.add_argument("second", help="the checkpoint B to compare with A (e.g. the transferred model)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    arguments = parser.parse_args(argv)
    try:
        first, second = load_checkpoint(arguments.first), load_checkpoint(arguments.second)
        table = compare_checkpoints(first, second)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-compare: {error}")
    print(f"A = {first.path} (alphabet {first.alphabet.chars!r}, step {first.global_step})")
    print(f"B = {second.path} (alphabet {second.alphabet.chars!r}, step {second.global_step})")
    if first.alphabet != second.alphabet:
        print("head: compared on the blank and the characters both alphabets have")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    if arguments.csv:
        table.to_csv(arguments.csv, index=False)


if __name__ == "__main__":
    main()
