"""Where a model errs: frames grouped by target character x correct/wrong, and by confusion pair.

For every utterance the transcript is forced-aligned to the model's own log-probabilities
(``tmaps.introspect.alignment.align_utterance``): each target character gets the output frames
where the most probable CTC path that spells the transcript emits it. The character's
*prediction* is what greedy decoding emits on those frames: the most frequent non-blank
argmax class, or :data:`DELETED` when greedy decoding emits only blanks there. A character is
correct when its prediction is the character itself.

An :class:`Outcome` is ``(target, predicted, start_s, end_s)``. :func:`outcome_groupings` turns the
outcomes into two frame-level groupings for ``NAP.compute``:

- ``"outcome"``: labels ``"<char>:correct"`` and ``"<char>:wrong"``;
- ``"confusion"``: the wrong characters only, labelled ``"<target>→<predicted>"``.

:func:`outcome_table` gives per character the error rate and the distance between the
profiles of its correct and its wrong frames, and :func:`plot_outcome_maps` draws, per
character, the maps of correct frames, wrong frames and their difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from scipy.spatial.distance import cosine
from torch import Tensor, nn

from tmaps.introspect.alignment import align_utterance, utterance_outputs
from tmaps.introspect.forward import ForwardFn
from tmaps.introspect.frames import FrameMap
from tmaps.introspect.groups import SegmentGrouping
from tmaps.introspect.profiles import Profiles
from tmaps.introspect.render import ColourScale, MapStyle, plot_maps
from tmaps.text import BLANK, Alphabet

#: The prediction of a character on whose frames greedy decoding emits only blanks.
DELETED = "∅"
CORRECT, WRONG = "correct", "wrong"


class Outcome(NamedTuple):
    """One aligned target character and what greedy decoding made of it."""

    target: str
    predicted: str
    start_s: float
    end_s: float


def character_outcomes(
    log_probs: Tensor, text: str, alphabet: Alphabet, output_map: FrameMap, frame_rate: float = 100.0
) -> list[Outcome]:
    """An :class:`Outcome` for each non-space character of ``text``, in order (arguments as for :func:`align_utterance`)."""
    characters = align_utterance(log_probs, text, alphabet, output_map, frame_rate)["characters"]
    if not characters:
        return []
    greedy = log_probs.argmax(dim=-1).cpu()
    first, stop = output_map.segment_frames([c[1] for c in characters], [c[2] for c in characters], frame_rate)
    outcomes = []
    for (target, start, end), begin, finish in zip(characters, first, stop):
        emitted = greedy[max(begin, 0) : finish]
        emitted = emitted[emitted != BLANK]
        predicted = alphabet.chars[int(torch.mode(emitted).values) - 1] if len(emitted) else DELETED
        outcomes.append(Outcome(target, predicted, start, end))
    return outcomes


def collect_outcomes(
    model: nn.Module,
    loader: Iterable[Mapping],
    alphabet: Alphabet,
    forward: ForwardFn | None = None,
    frame_rate: float = 100.0,
) -> dict[str, list[Outcome]]:
    """:func:`character_outcomes` of every utterance of ``loader``, by record id.

    Raises:
        ValueError: a transcript cannot be aligned (e.g. longer than the model's output allows);
            the message names the record.
    """
    by_record = {}
    for record, log_probs, output_map in utterance_outputs(model, loader, forward):
        try:
            by_record[record["id"]] = character_outcomes(log_probs, record["text"], alphabet, output_map, frame_rate)
        except RuntimeError as error:
            raise ValueError(f"record {record['id']!r} cannot be aligned: {error}") from None
    return by_record


def outcome_label(target: str, predicted: str) -> str:
    return f"{target}:{CORRECT if predicted == target else WRONG}"


def confusion_label(target: str, predicted: str) -> str:
    return f"{target}→{predicted}"


def outcome_groupings(by_record: Mapping[str, Sequence[Outcome]]) -> tuple[SegmentGrouping, SegmentGrouping]:
    """The ``"outcome"`` and ``"confusion"`` groupings of the module notes, for ``NAP.compute``."""
    segments = {
        record_id: {
            "outcome": [[outcome_label(t, p), start, end] for t, p, start, end in record_outcomes],
            "confusion": [[confusion_label(t, p), start, end] for t, p, start, end in record_outcomes if t != p],
        }
        for record_id, record_outcomes in by_record.items()
    }
    return (
        SegmentGrouping("outcome", alignments=segments, name="outcome"),
        SegmentGrouping("confusion", alignments=segments, name="confusion"),
    )


def confusion_counts(by_record: Mapping[str, Sequence[Outcome]]) -> pd.DataFrame:
    """Columns ``target, predicted, count, rate`` (the share of the target's characters), most frequent first."""
    pairs = Counter((t, p) for record_outcomes in by_record.values() for t, p, _, _ in record_outcomes)
    totals = Counter()
    for (target, _), count in pairs.items():
        totals[target] += count
    table = pd.DataFrame(
        [{"target": t, "predicted": p, "count": n, "rate": n / totals[t]} for (t, p), n in pairs.items()],
        columns=["target", "predicted", "count", "rate"],
    )
    return table.sort_values(["count", "target", "predicted"], ascending=[False, True, True], ignore_index=True)


def outcome_table(by_record: Mapping[str, Sequence[Outcome]], profiles: Profiles | None = None, layer: str | None = None) -> pd.DataFrame:
    """Per target character: ``count``, ``errors``, ``error_rate``, ``top_confusion``, and with
    ``profiles`` of the ``"outcome"`` grouping the ``profile_distance`` (cosine) between its
    correct and wrong frames at ``layer`` (NaN when either group has no frames).
    """
    confusions = confusion_counts(by_record)
    rows = []
    for target, pairs in confusions.groupby("target", sort=True):
        wrong = pairs[pairs.predicted != target]
        row = {
            "character": target,
            "count": int(pairs["count"].sum()),
            "errors": int(wrong["count"].sum()),
            "top_confusion": confusion_label(target, wrong.predicted.iloc[0]) if len(wrong) else "",
        }
        row["error_rate"] = row["errors"] / row["count"]
        if profiles is not None:
            row["profile_distance"] = correct_wrong_distance(profiles, layer, target)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["error_rate", "count"], ascending=False, ignore_index=True)


def correct_wrong_distance(profiles: Profiles, layer: str, character: str) -> float:
    """Cosine distance at ``layer`` between the profiles of a character's correct and wrong frames."""
    groups = profiles.groups
    correct, wrong = outcome_label(character, character), f"{character}:{WRONG}"
    if correct not in groups or wrong not in groups:
        return float("nan")
    matrix = profiles[layer].raw_mean
    return float(cosine(matrix[groups.index(correct)], matrix[groups.index(wrong)]))


def plot_outcome_maps(
    coords: ArrayLike,
    profiles: Profiles,
    layer: str,
    characters: Sequence[str],
    *,
    style: MapStyle = MapStyle(),
    title: str | None = None,
    limit: float | ColourScale | None = None,
) -> Figure:
    """Per character one row: the maps of its correct frames, its wrong frames, and wrong − correct.

    Values are the profiles of the ``"outcome"`` grouping at ``layer`` (``profiles.quantity``), on one
    symmetric colour scale (``±limit``, by default the 99th percentile of ``|values|`` of the maps).

    Args:
        coords: ``(N, 2)`` layout of the layer's units.
        profiles: profiles of the ``"outcome"`` grouping.
        layer: the layer to draw.
        characters: characters that have both correct and wrong frames.
    """
    groups = profiles.groups
    missing = [c for c in characters if f"{c}:{CORRECT}" not in groups or f"{c}:{WRONG}" not in groups]
    if missing:
        raise ValueError(f"characters {missing} lack correct or wrong frames in the profiles; groups: {groups}")
    mean = profiles[layer].mean
    rows, labels = [], []
    for char in characters:
        correct, wrong = mean[groups.index(f"{char}:{CORRECT}")], mean[groups.index(f"{char}:{WRONG}")]
        rows += [correct, wrong, wrong - correct]
        labels += [f"{char} correct", f"{char} wrong", f"{char} wrong − correct"]
    return plot_maps(coords, np.stack(rows), labels, colorbar_label=profiles.quantity, order=False, ncols=3, style=style, title=title, limit=limit)
