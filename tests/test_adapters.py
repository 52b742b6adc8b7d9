"""Profiles of transformer, conformer and waveform models: output adapters, exact frame maps, waveform forwards.

The models are random-initialised torchaudio architectures (no download): a small
``wav2vec2_model(...)`` with wav2vec 2.0's feature-encoder strides, and ``tmaps.models.ConformerCTC``
(torchaudio's ``ConformerLayer``). References are computed independently: per-group means over
stored activations, frame centres from the receptive fields that autograd finds, and Captum's
``LayerGradientXActivation``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio
from captum.attr import LayerGradientXActivation
from test_nap import loader_batches
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from tmaps.data.dataset import load_audio
from tmaps.data.features import SAMPLE_RATE
from tmaps.data.manifest import read_manifest
from tmaps.introspect import NAP, GradientXActivation, GradNAP, OutputAdapter
from tmaps.introspect.adapters import WAVEFORM, waveform_forward
from tmaps.introspect.frames import TimeAxisProbe
from tmaps.introspect.groups import resolve_grouping
from tmaps.models import ConformerCTC
from tmaps.text import Alphabet

ALPHABET = Alphabet.for_language("en")
# wav2vec 2.0's feature encoder (kernel, stride) at 32 channels: 20 ms frames, 400-sample receptive field.
EXTRACTOR = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
WAV2VEC2_STRIDE, WAV2VEC2_OFFSET = 320, 199.5


@pytest.fixture(scope="module")
def wav2vec2():
    torch.manual_seed(0)
    return torchaudio.models.wav2vec2_model(
        extractor_mode="layer_norm",  # per-frame norms: group_norm mixes all frames of the first layer
        extractor_conv_layer_config=EXTRACTOR,
        extractor_conv_bias=False,
        encoder_embed_dim=64,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=128,
        encoder_pos_conv_groups=16,
        encoder_num_layers=2,
        encoder_num_heads=4,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=96,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=ALPHABET.n_classes,
    ).eval()


@pytest.fixture(scope="module")
def waveform_batches(synth_corpus_en):
    """Raw-audio batches of 3 and 2 synthetic utterances of different lengths, with their transcripts."""
    records = read_manifest(synth_corpus_en / "train.jsonl")[:5]
    batches = []
    for chunk in (records[:3], records[3:]):
        audio = [load_audio(record["audio"]) for record in chunk]
        targets = [torch.tensor(ALPHABET.encode(record["text"])) for record in chunk]
        batches.append(
            {
                "audio": pad_sequence(audio, batch_first=True),
                "audio_lengths": torch.tensor([len(a) for a in audio]),
                "targets": pad_sequence(targets, batch_first=True),
                "target_lengths": torch.tensor([len(t) for t in targets]),
                "records": chunk,
            }
        )
    assert len(set(batches[0]["audio_lengths"].tolist())) > 1
    return batches


@pytest.fixture(scope="module")
def conformer():
    torch.manual_seed(0)
    return ConformerCTC(
        n_features=40, n_classes=ALPHABET.n_classes, subsample_channels=[32, 32], d_model=32, n_blocks=2, n_heads=4, ffn_dim=48, conv_kernel_size=7
    ).eval()


@pytest.fixture(scope="module")
def mel_batches(synth_corpus_en, tmp_path_factory):
    records = read_manifest(synth_corpus_en / "train.jsonl")[:6]
    return loader_batches(records, tmp_path_factory.mktemp("conformer"), max_batch_seconds=8.0)


def stored_activations(model, layers, batch, forward, select):
    """Every layer's output tensor for one batch, cloned at once."""
    stored = {}
    hooks = [
        model.get_submodule(layer).register_forward_hook(lambda m, i, o, layer=layer: stored.__setitem__(layer, select(layer, o).detach().clone()))
        for layer in layers
    ]
    with torch.no_grad():
        forward(model, batch)
    for hook in hooks:
        hook.remove()
    return stored


def segment_frames(start, end, stride, offset, rate, n_valid):
    """Frames whose centres ``(m * stride + offset) / rate`` fall in ``[start, end)``; the nearest one if none does."""
    centres = (np.arange(n_valid) * stride + offset) / rate
    inside = np.flatnonzero((centres >= start - 1e-9) & (centres < end - 1e-9))
    if len(inside):
        return inside
    nearest = int(np.floor(((start + end) / 2 * rate - offset) / stride + 0.5))
    return np.array([nearest]) if 0 <= nearest < n_valid else np.array([], dtype=int)


def group_means(values_per_batch, batches, valid_per_batch, stride, offset, rate, groups="phoneme"):
    """Per-group mean and frame count from stored ``(B, U, T)`` values: the brute-force profile."""
    grouping = resolve_grouping(groups)
    collected = {}
    for values, batch, valid in zip(values_per_batch, batches, valid_per_batch):
        for b, record in enumerate(batch["records"]):
            for label, start, end in grouping.segments(record):
                for m in segment_frames(start, end, stride, offset, rate, int(valid[b])):
                    collected.setdefault(label, []).append(values[b, :, m].double())
    return {label: (torch.stack(vectors).mean(0).numpy(), len(vectors)) for label, vectors in collected.items()}


def assert_profiles_equal(profiles, layer, reference):
    assert sorted(profiles.groups) == sorted(reference)
    for row, label in enumerate(profiles.groups):
        mean, count = reference[label]
        assert profiles[layer].counts[row] == count
        np.testing.assert_allclose(profiles[layer].raw_mean[row], mean, rtol=1e-5, atol=1e-6)


# wav2vec 2.0 layers: a conv block and a transformer layer return tuples; the FFN's hidden Linear (B, T, U).
WAV2VEC2_LAYERS = {
    "feature_extractor.conv_layers.6": (OutputAdapter(element=0), lambda o: o),
    "encoder.transformer.layers.0": (OutputAdapter(element=0), lambda o: o.transpose(1, 2)),
    "encoder.transformer.layers.1.feed_forward.intermediate_dense": (OutputAdapter(), lambda o: o.transpose(1, 2)),
}


def test_wav2vec2_frame_map_is_exact_and_matches_the_receptive_fields(wav2vec2, waveform_batches):
    batch = waveform_batches[0]
    with TimeAxisProbe(wav2vec2) as probe, torch.no_grad():
        logits, output_lengths = wav2vec2(batch["audio"], batch["audio_lengths"])
    frame_map = probe.frame_map(batch["audio"].shape[-1], logits.shape[1])
    # The positional convolution's output is one frame longer: before, the probe fell back to an estimate (stride 327).
    assert frame_map.exact and frame_map.stride == WAV2VEC2_STRIDE and frame_map.offset == WAV2VEC2_OFFSET
    assert frame_map.lengths(batch["audio_lengths"], logits.shape[1]).tolist() == output_lengths.tolist()
    # Ground truth: the samples that reach frame m (autograd) span [320 m, 320 m + 399], centred at 320 m + 199.5.
    audio = batch["audio"][:1, : 4 * SAMPLE_RATE // 10].clone().requires_grad_()
    encoded, _ = wav2vec2.feature_extractor(audio, None)
    for m in (0, 5, encoded.shape[1] - 1):
        (gradient,) = torch.autograd.grad(encoded[0, m].abs().sum(), audio, retain_graph=True)
        reached = torch.nonzero(gradient[0]).flatten()
        assert (reached.min() + reached.max()) / 2 == m * frame_map.stride + frame_map.offset


def test_wav2vec2_segments_cover_the_frames_centred_inside_their_timings(wav2vec2, waveform_batches):
    batch = waveform_batches[0]
    with TimeAxisProbe(wav2vec2) as probe, torch.no_grad():
        logits, output_lengths = wav2vec2(batch["audio"], batch["audio_lengths"])
    frame_map = probe.frame_map(batch["audio"].shape[-1], logits.shape[1])
    for record, n_valid in zip(batch["records"], output_lengths.tolist()):
        starts, ends = (np.array([segment[i] for segment in record["phonemes"]]) for i in (1, 2))
        first, stop = frame_map.segment_frames(starts, ends, SAMPLE_RATE)
        for start, end, f, s in zip(starts, ends, first, stop):
            expected = segment_frames(start, end, WAV2VEC2_STRIDE, WAV2VEC2_OFFSET, SAMPLE_RATE, 10**6)
            assert list(range(f, s)) == expected.tolist()
        centres = frame_map.seconds(np.arange(n_valid), SAMPLE_RATE)
        assert centres[0] == pytest.approx(199.5 / SAMPLE_RATE) and np.diff(centres) == pytest.approx(0.02)


def test_wav2vec2_nap_equals_brute_force_over_stored_activations(wav2vec2, waveform_batches):
    adapters = {layer: adapter for layer, (adapter, _) in WAV2VEC2_LAYERS.items()}
    nap = NAP(wav2vec2, list(WAV2VEC2_LAYERS), forward=waveform_forward, frame_rate=SAMPLE_RATE, adapters=adapters, inputs=WAVEFORM)
    profiles = nap.compute(waveform_batches, "phoneme")
    assert {layer: profiles.info["frame_maps"][layer] for layer in WAV2VEC2_LAYERS} == dict.fromkeys(
        WAV2VEC2_LAYERS, {"stride": WAV2VEC2_STRIDE, "offset": WAV2VEC2_OFFSET, "exact": True}
    )
    stored = [
        stored_activations(wav2vec2, WAV2VEC2_LAYERS, batch, waveform_forward, lambda layer, o: adapters[layer].select(layer, o))
        for batch in waveform_batches
    ]
    valid = [waveform_forward(wav2vec2, batch)[1] for batch in waveform_batches]
    for layer, (_, to_units_by_time) in WAV2VEC2_LAYERS.items():
        values = [to_units_by_time(batch_outputs[layer]) for batch_outputs in stored]
        assert_profiles_equal(profiles, layer, group_means(values, waveform_batches, valid, WAV2VEC2_STRIDE, WAV2VEC2_OFFSET, SAMPLE_RATE))


# Conformer layers: a front-end conv (B, C, T), a block (T, B, D), an FFN's hidden units (T, B, U).
CONFORMER_LAYERS = {
    "conv1": lambda o: o,
    "block0": lambda o: o.permute(1, 2, 0),
    "block1.ffn1.sequential.1": lambda o: o.permute(1, 2, 0),
}


def mel_forward(model, batch):
    return model(batch["features"], batch["feature_lengths"])


def test_conformer_nap_equals_brute_force_over_stored_activations(conformer, mel_batches):
    profiles = NAP(conformer, list(CONFORMER_LAYERS)).compute(mel_batches, "phoneme")
    # Two kernel-3, stride-2 convolutions padded by 1: frame m is centred at feature frame 4 m.
    assert profiles.info["frame_maps"]["block1.ffn1.sequential.1"] == {"stride": 4, "offset": 0.0, "exact": True}
    stored = [stored_activations(conformer, CONFORMER_LAYERS, batch, mel_forward, lambda layer, o: o) for batch in mel_batches]
    valid = [conformer.output_lengths(batch["feature_lengths"]) for batch in mel_batches]
    for layer, to_units_by_time in CONFORMER_LAYERS.items():
        values = [to_units_by_time(batch_outputs[layer]) for batch_outputs in stored]
        assert_profiles_equal(profiles, layer, group_means(values, mel_batches, valid, 4, 0.0, 100.0))


def captum_group_means(model, layer, batches, forward_inputs, objective, to_units_by_time, valid, stride, offset, rate):
    """GradNAP's reference: Captum's per-example layer attributions of ``J_b``, averaged per phoneme."""
    attributions = []
    for batch in batches:
        captum = LayerGradientXActivation(objective, model.get_submodule(layer))
        inputs, extra = forward_inputs(batch)
        attributions.append(to_units_by_time(captum.attribute(inputs, additional_forward_args=extra).detach()))
    return group_means(attributions, batches, valid, stride, offset, rate)


def predicted_objective(log_probs, output_lengths):
    """``J_b``: the summed log-probability of each frame's most probable class over the valid frames."""
    valid = torch.arange(log_probs.shape[1]) < output_lengths[:, None]
    return torch.where(valid, log_probs.max(dim=-1).values, torch.zeros(())).sum(dim=1)


def test_conformer_gradnap_equals_captum_per_group(conformer, mel_batches):
    layers = ["block0", "block1.ffn1.sequential.1"]
    profiles = GradNAP(conformer, layers, target="predicted").compute(mel_batches, "phoneme", normalize=None)
    valid = [conformer.output_lengths(batch["feature_lengths"]) for batch in mel_batches]

    def objective(features, lengths):
        return predicted_objective(*conformer(features, lengths))

    for layer in layers:
        reference = captum_group_means(
            conformer, layer, mel_batches, lambda b: (b["features"], (b["feature_lengths"],)), objective,
            CONFORMER_LAYERS[layer], valid, 4, 0.0, 100.0,
        )
        assert_profiles_equal(profiles, layer, reference)


def test_wav2vec2_gradnap_equals_captum_per_group(wav2vec2, waveform_batches):
    layer = "encoder.transformer.layers.1.feed_forward.intermediate_dense"
    profiles = GradNAP(wav2vec2, layer, target="aligned", forward=waveform_forward, frame_rate=SAMPLE_RATE, inputs=WAVEFORM).compute(
        waveform_batches, "phoneme", normalize=None
    )
    valid = [waveform_forward(wav2vec2, batch)[1] for batch in waveform_batches]
    for batch in waveform_batches:  # the aligned targets GradNAP uses, for Captum's objective
        with TimeAxisProbe(wav2vec2) as probe, torch.no_grad():
            log_probs, lengths = waveform_forward(wav2vec2, batch)
        batch["frame_targets"] = GradientXActivation(target="aligned").frame_targets(
            batch, log_probs, lengths, probe.frame_map(batch["audio"].shape[-1], log_probs.shape[1]), SAMPLE_RATE
        )

    def objective(audio, audio_lengths, targets):
        log_probs, lengths = waveform_forward(wav2vec2, {"audio": audio, "audio_lengths": audio_lengths})
        selected = log_probs.gather(-1, targets[..., None]).squeeze(-1)
        return torch.where(torch.arange(log_probs.shape[1]) < lengths[:, None], selected, torch.zeros(())).sum(dim=1)

    reference = captum_group_means(
        wav2vec2, layer, waveform_batches, lambda b: (b["audio"], (b["audio_lengths"], b["frame_targets"])), objective,
        WAV2VEC2_LAYERS[layer][1], valid, WAV2VEC2_STRIDE, WAV2VEC2_OFFSET, SAMPLE_RATE,
    )
    assert_profiles_equal(profiles, layer, reference)


def test_tuple_output_without_element_names_the_layer_and_shapes(wav2vec2, waveform_batches):
    nap = NAP(wav2vec2, "encoder.transformer.layers.0", forward=waveform_forward, frame_rate=SAMPLE_RATE, inputs=WAVEFORM)
    shapes = r"a tuple of \(tensor \(3, \d+, 64\), NoneType\)"
    with pytest.raises(ValueError, match=rf"layer 'encoder.transformer.layers.0' returns {shapes}.*OutputAdapter\(element=0\)"):
        nap.compute(waveform_batches[:1], "phoneme")


class FixedLengthSummary(nn.Module):
    """A conv layer followed by pooling to 5 steps: the pooled output has no time axis of the input's lengths."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(40, 8, 3, padding=1)
        self.summary = nn.AdaptiveAvgPool1d(5)
        self.head = nn.Linear(40, ALPHABET.n_classes)

    def forward(self, features):
        summary = self.summary(self.conv(features))  # (B, 8, 5)
        return self.head(summary.flatten(1))[:, :, None].expand(-1, -1, features.shape[-1])


def test_layer_without_a_time_axis_of_the_length_family_is_named(mel_batches):
    batch = mel_batches[0]
    shape, family = rf"\({len(batch['records'])}, 8, 5\)", rf"\[{batch['features'].shape[-1]}\]"
    with pytest.raises(ValueError, match=rf"layer 'summary' returns a tensor {shape} with no time axis of the input's length family {family}"):
        NAP(FixedLengthSummary(), "summary").compute([batch], "phoneme")


def test_declared_axes_read_a_time_major_layer_the_probe_cannot_tell_apart(conformer, mel_batches):
    """One utterance repeated as often as it has frames: (T, B, U) reads two ways, the declared axes decide."""
    single = {key: value[:1] for key, value in mel_batches[0].items()}
    n_frames = int(conformer.output_lengths(single["feature_lengths"])[0])
    single = {key: value[..., : 4 * n_frames] if key == "features" else value for key, value in single.items()}
    square = {
        key: value.expand(n_frames, *value.shape[1:]) if torch.is_tensor(value) else value * n_frames for key, value in single.items()
    }
    layer = "block1.ffn1.sequential.1"
    with pytest.raises(ValueError, match=rf"layer '{layer}' returns a tensor \({n_frames}, {n_frames}, 48\) that reads in 2 ways"):
        NAP(conformer, layer).compute([square], "phoneme")
    declared = NAP(conformer, layer, adapters={layer: OutputAdapter(time_axis=0, batch_axis=1)}).compute([square], "phoneme")
    probed = NAP(conformer, layer).compute([single], "phoneme")
    np.testing.assert_allclose(declared[layer].raw_mean, probed[layer].raw_mean, rtol=1e-5, atol=1e-6)
