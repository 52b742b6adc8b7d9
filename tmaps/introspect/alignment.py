"""Character and word segments by CTC forced alignment, for corpora without segments.

A trained model's log-probabilities and an utterance's transcript give, through
``torchaudio.functional.forced_align``, the most probable CTC path that spells the transcript;
each character's frames become a segment ``[char, start_s, end_s]`` (half an output frame
before its first frame's centre to half a frame after its last one, see
``tmaps.introspect.frames``). Words run from their first character's start to their last
character's end; spaces separate words and are not character segments.

The result (``{record id: {"characters": [...], "words": [...]}}``) feeds the ``alignments``
argument of the groupings and of ``GradNAP``, or can be merged into the records and written
as a manifest (``tmaps.data.manifest.write_manifest``) to align a corpus once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
import torchaudio.functional
from torch import Tensor, nn

from tmaps.introspect.forward import ForwardFn, default_forward, evaluating, model_outputs, to_model_device
from tmaps.introspect.frames import FrameMap, TimeAxisProbe
from tmaps.progress import progress_bar
from tmaps.text import BLANK, Alphabet


def align_utterance(
    log_probs: Tensor, text: str, alphabet: Alphabet, output_map: FrameMap, frame_rate: float = 100.0
) -> dict[str, list[list]]:
    """Character and word segments of one utterance.

    Args:
        log_probs: ``(T', C)`` log-probabilities of the utterance's valid output frames.
        text: its normalized transcript.
        alphabet: the model's output classes.
        output_map: where the output frames lie in time.
        frame_rate: feature frames per second.

    Returns:
        ``{"characters": [[char, start_s, end_s], ...], "words": [[word, start_s, end_s], ...]}``.
    """
    if not text:
        return {"characters": [], "words": []}
    targets = torch.tensor([alphabet.encode(text)], dtype=torch.int32)
    path, scores = torchaudio.functional.forced_align(log_probs[None].detach().float().cpu(), targets, blank=BLANK)
    spans = torchaudio.functional.merge_tokens(path[0], scores[0].exp(), blank=BLANK)
    starts, ends = output_map.span_seconds([span.start for span in spans], [span.end for span in spans], frame_rate)
    timed = [(char, round(float(start), 4), round(float(end), 4)) for char, start, end in zip(text, starts, ends)]
    characters = [[char, start, end] for char, start, end in timed if char != " "]
    words, current = [], []
    for char, start, end in [*timed, (" ", 0.0, 0.0)]:
        if char != " ":
            current.append((char, start, end))
        elif current:
            words.append(["".join(c for c, _, _ in current), current[0][1], current[-1][2]])
            current = []
    return {"characters": characters, "words": words}


def align(
    model: nn.Module,
    loader: Iterable[Mapping],
    alphabet: Alphabet,
    forward: ForwardFn | None = None,
    frame_rate: float = 100.0,
) -> dict[str, dict[str, list[list]]]:
    """Forced-align the transcript of every utterance of ``loader`` with a trained ``model``.

    Args:
        model: a trained CTC model (run in eval mode, its mode restored after).
        loader: batches as in docs/design.md.
        alphabet: the model's output classes.
        forward: how to run the model (see ``tmaps.introspect.forward.default_forward``).
        frame_rate: feature frames per second.

    Returns:
        ``{record id: {"characters": [...], "words": [...]}}``.
    """
    alignments = {}
    for record, log_probs, output_map in progress_bar(utterance_outputs(model, loader, forward), "forced alignment"):
        try:
            alignments[record["id"]] = align_utterance(log_probs, record["text"], alphabet, output_map, frame_rate)
        except RuntimeError as error:
            raise ValueError(f"record {record['id']!r} cannot be aligned: {error}") from None
    return alignments


def utterance_outputs(
    model: nn.Module, loader: Iterable[Mapping], forward: ForwardFn | None = None
) -> Iterator[tuple[dict, Tensor, FrameMap]]:
    """Every record of ``loader`` with its valid log-probabilities ``(T', C)`` and the output frame map.

    The model runs in eval mode without gradients (its mode is restored afterwards).
    """
    forward = forward or default_forward
    output_map = None
    with evaluating(model):
        for batch in loader:
            batch = to_model_device(model, batch)
            probe = TimeAxisProbe(model) if output_map is None else None
            with torch.no_grad(), probe or contextlib.nullcontext():
                result = forward(model, batch)
            n_output_frames = (result[0] if isinstance(result, tuple) else result).shape[1]
            output_map = output_map or probe.frame_map(batch["features"].shape[-1], n_output_frames)
            log_probs, output_lengths = model_outputs(result, batch, output_map)
            for b, record in enumerate(batch["records"]):
                yield record, log_probs[b, : output_lengths[b]], output_map
