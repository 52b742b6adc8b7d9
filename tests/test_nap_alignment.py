"""Frame maps (layer frames in time) and CTC forced alignment into character and word segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tmaps.data.dataset import load_audio
from tmaps.data.features import LogMel
from tmaps.data.manifest import read_manifest
from tmaps.introspect.alignment import align, align_utterance
from tmaps.introspect.frames import FrameMap, TimeAxisProbe
from tmaps.introspect.groups import CharacterGrouping
from tmaps.introspect.nap import NAP, GradNAP
from tmaps.models import Wav2Letter
from tmaps.text import Alphabet

ENGLISH = Alphabet.for_language("en")


def receptive_field_centre(model: nn.Module, n_input_frames: int, frame: int) -> float:
    """Midpoint of the input frames that output ``frame`` depends on (all-positive linear layers)."""
    features = torch.ones(1, 1, n_input_frames, requires_grad=True)
    model(features)[0, :, frame].sum().backward()
    support = torch.nonzero(features.grad[0, 0]).flatten()
    return (support[0].item() + support[-1].item()) / 2


def positive_chain(*modules: nn.Module) -> nn.Sequential:
    chain = nn.Sequential(*modules)
    for parameter in chain.parameters():
        nn.init.constant_(parameter, 0.1)
    return chain


@pytest.mark.parametrize(
    "modules",
    [
        # torchaudio's Wav2Letter geometry: even kernels, padding 23 and 16.
        lambda: [nn.Conv1d(1, 2, 48, stride=2, padding=23), nn.Conv1d(2, 2, 7, padding=3), nn.Conv1d(2, 2, 32, padding=16)],
        lambda: [nn.Conv1d(1, 2, 11, stride=2, padding=5), nn.AvgPool1d(3, stride=2, padding=1), nn.Conv1d(2, 2, 4, padding="same", dilation=2)],
        lambda: [nn.Conv1d(1, 2, 5, stride=3), nn.AvgPool1d(2)],
    ],
)
def test_exact_frame_map_is_the_receptive_field_centre_and_length(modules):
    model = positive_chain(*modules())
    n_input = 301
    with TimeAxisProbe(model) as probe:
        output = model(torch.ones(1, 1, n_input))
    frame_map = probe.frame_map(n_input, output.shape[-1])
    assert frame_map.exact
    middle = output.shape[-1] // 2
    assert middle * frame_map.stride + frame_map.offset == receptive_field_centre(model, n_input, middle)
    for length in (97, 150, 151, 299):
        assert frame_map.lengths(torch.tensor([length]), 10_000).item() == model(torch.ones(1, 1, length)).shape[-1]


def test_estimated_frame_map_for_layers_outside_a_conv_chain():
    class EveryOther(nn.Module):
        def forward(self, x):
            return x[..., ::2]

    model = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), EveryOther())
    with TimeAxisProbe(model) as probe:
        output = model(torch.ones(1, 1, 101))
    frame_map = probe.frame_map(101, output.shape[-1])
    assert not frame_map.exact
    assert (frame_map.stride, frame_map.offset) == (2, 0.0)
    assert frame_map.lengths(torch.tensor([101, 40]), output.shape[-1]).tolist() == [51, 20]
    with pytest.raises(ValueError, match="upsamples"):
        FrameMap.estimate(10, 20)


def test_segments_map_to_frames_and_back():
    frame_map = FrameMap(stride=2, offset=0.5)
    first, stop = np.array([0, 3, 7]), np.array([3, 4, 12])
    starts, ends = frame_map.span_seconds(first, stop, frame_rate=100)
    np.testing.assert_allclose(starts, [-0.005, 0.055, 0.135])
    returned = frame_map.segment_frames(starts, ends, frame_rate=100)
    assert [a.tolist() for a in returned] == [first.tolist(), stop.tolist()]
    # A 5 ms segment holds no frame centre: it takes the frame nearest its middle.
    assert [a.tolist() for a in frame_map.segment_frames([0.091], [0.096], 100)] == [[4], [5]]


def test_forced_alignment_recovers_a_known_path():
    text = "ab c"
    labels = [0, 0, *[ENGLISH.index("a")] * 3, 0, *[ENGLISH.index("b")] * 2, 0, ENGLISH.index(" "), 0, 0, *[ENGLISH.index("c")] * 3, 0]
    log_probs = (10 * nn.functional.one_hot(torch.tensor(labels), ENGLISH.n_classes).float()).log_softmax(-1)
    frame_map = FrameMap(stride=2, offset=0.0)
    segments = align_utterance(log_probs, text, ENGLISH, frame_map)
    assert [c for c, _, _ in segments["characters"]] == ["a", "b", "c"]
    spans = [[2, 5], [6, 8], [12, 15]]
    for (_, start, end), (first, stop) in zip(segments["characters"], spans):
        np.testing.assert_allclose([start, end], [(first - 0.5) * 0.02, (stop - 0.5) * 0.02])
        assert [a.item() for a in frame_map.segment_frames([start], [end], 100)] == [first, stop]
    assert segments["words"] == [["ab", segments["characters"][0][1], segments["characters"][1][2]], ["c", *segments["characters"][2][1:]]]


@pytest.fixture(scope="module")
def batches(synth_corpus_en):
    records = read_manifest(synth_corpus_en / "train.jsonl")[:4]
    log_mel = LogMel(n_mels=40)
    batches = []
    for record in records:
        features = log_mel(load_audio(record["audio"]))[None]
        targets = torch.tensor([ENGLISH.encode(record["text"])])
        batches.append(
            {
                "features": features,
                "feature_lengths": torch.tensor([features.shape[-1]]),
                "targets": targets,
                "target_lengths": torch.tensor([targets.shape[1]]),
                "records": [{k: v for k, v in record.items() if k not in ("words", "phonemes")}],
            }
        )
    return batches


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Wav2Letter(n_features=40, n_classes=ENGLISH.n_classes, channels=[16, 16], kernel_sizes=[11, 1], strides=[2, 1])


def test_align_gives_every_character_a_segment_that_groupings_use(model, batches):
    alignments = align(model, batches, ENGLISH)
    for batch in batches:
        record = batch["records"][0]
        segments = alignments[record["id"]]
        assert "".join(c for c, _, _ in segments["characters"]) == record["text"].replace(" ", "")
        assert [w for w, _, _ in segments["words"]] == record["text"].split()
        times = [t for _, start, end in segments["characters"] for t in (start, end)]
        assert times == sorted(times) and -0.01 <= times[0] and times[-1] <= record["duration"] + 0.02
    profiles = NAP(model, ["conv1"]).compute(batches, CharacterGrouping(alignments=alignments))
    expected = {c for b in batches for c in b["records"][0]["text"] if c != " "}
    assert set(profiles.groups) == expected
    gradients = GradNAP(model, ["conv1"], alignments=alignments).compute(batches, CharacterGrouping(alignments=alignments))
    assert gradients.groups == profiles.groups and np.isfinite(gradients["conv1"].mean).all()
    with pytest.raises(ValueError, match="neither 'characters' nor 'words'"):
        NAP(model, ["conv1"]).compute(batches, "character")


def test_align_names_an_utterance_too_short_for_its_text(model, batches):
    batch = {**batches[0], "records": [{**batches[0]["records"][0], "text": "a" * 400}]}
    with pytest.raises(ValueError, match=f"record {batch['records'][0]['id']!r} cannot be aligned"):
        align(model, [batch], ENGLISH)
