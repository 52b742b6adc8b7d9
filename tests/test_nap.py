"""NAPs and GradNAPs on real synthetic speech: streaming statistics against brute force over stored activations."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from captum.attr import LayerGradientXActivation

from tmaps.data import SpeechDataModule
from tmaps.data.dataset import collate
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.introspect.attribution import GradientAttribution, GradientXActivation
from tmaps.introspect.groups import CharacterGrouping, RecordGrouping, SegmentGrouping, resolve_grouping
from tmaps.introspect.nap import NAP, GradNAP, Profiler
from tmaps.introspect.phonemes import PHONEME_CLASSES, phoneme_class
from tmaps.introspect.profiles import Profiles
from tmaps.models import Wav2Letter
from tmaps.text import Alphabet

ENGLISH = Alphabet.for_language("en")
PROFILES_V1 = Path(__file__).parent / "data" / "profiles_v1"
# Odd kernels, stride 2 at conv0: every layer's frame m is centred at input frame 2 m.
TMAPS_LAYERS = {"conv0": (2, 0.0), "conv2": (2, 0.0), "head": (2, 0.0)}
# torchaudio's Wav2Letter: conv0 (kernel 48, padding 23) centres frame m at input 2 m + 0.5;
# the kernel-32 convolution with padding 16 moves the centre back by one frame.
TORCHAUDIO_LAYERS = {"acoustic_model.1": (2, 0.5), "acoustic_model.17": (2, -0.5)}


def loader_batches(records, folder, max_batch_seconds):
    """The batches of ``SpeechDataModule`` over a manifest of ``records``, in duration order."""
    write_manifest(records, folder / "corpus" / "train.jsonl")
    module = SpeechDataModule(
        source={"kind": "manifest", "path": str(folder / "corpus"), "splits": {"train": "train.jsonl"}},
        root=str(folder / "cache"),
        batching={"max_batch_seconds": max_batch_seconds, "num_workers": 0},
    )
    module.prepare_data()
    return list(module.loader("train", shuffle=False))


@pytest.fixture(scope="module")
def batches(synth_corpus_en, tmp_path_factory):
    records = read_manifest(synth_corpus_en / "train.jsonl")[:8]
    batches = loader_batches(records, tmp_path_factory.mktemp("batches"), max_batch_seconds=6.0)
    assert len(batches) > 1 and any(len(set(b["feature_lengths"].tolist())) > 1 for b in batches)
    return batches


@pytest.fixture(scope="module")
def single_batches(synth_corpus_en, tmp_path_factory):
    """One utterance per batch: no padding, so per-utterance runs equal the batch."""
    records = read_manifest(synth_corpus_en / "train.jsonl")[:4]
    batches = loader_batches(records, tmp_path_factory.mktemp("single"), max_batch_seconds=0.1)
    assert [len(b["records"]) for b in batches] == [1] * len(records)
    return batches


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Wav2Letter(n_features=40, n_classes=ENGLISH.n_classes, channels=[24, 24, 32], kernel_sizes=[11, 7, 1], strides=[2, 1, 1]).eval()


@pytest.fixture(scope="module")
def torchaudio_model():
    torch.manual_seed(0)
    return torchaudio.models.Wav2Letter(num_classes=29, input_type="mfcc", num_features=40).eval()


def reference_frames(start, end, stride, offset, n_valid):
    """Frames whose centre lies in [start, end), or the frame nearest the midpoint: a plain loop."""
    centres = [(m * stride + offset) / 100 for m in range(n_valid)]
    inside = [m for m, c in enumerate(centres) if start - 1e-9 <= c < end - 1e-9]
    if inside or not centres:
        return inside
    nearest = min(range(-n_valid, 2 * n_valid), key=lambda m: abs((m * stride + offset) / 100 - (start + end) / 2))
    return [nearest] if 0 <= nearest < n_valid else []


def reference_onset(start, stride, offset):
    return math.floor((start * 100 - offset) / stride + 0.5)


def stored_outputs(model, layers, batch, forward):
    """Every layer's full output for one batch (cloned at once, before in-place ops)."""
    stored = {}
    handles = [
        model.get_submodule(layer).register_forward_hook(lambda m, i, o, layer=layer: stored.__setitem__(layer, o.detach().clone()))
        for layer in layers
    ]
    with torch.no_grad():
        forward(batch)
    for handle in handles:
        handle.remove()
    return stored


def brute_force(values_per_batch, batches, grouping, stride, offset, valid_lengths, window=None):
    """Per-group lists of unit vectors (per offset when ``window``), from stored (B, U, T) values."""
    collected = {}
    for values, batch in zip(values_per_batch, batches):
        for b, record in enumerate(batch["records"]):
            n_valid = int(valid_lengths(batch["feature_lengths"][b], values.shape[-1]))
            for label, start, end in grouping.segments(record):
                if window is None:
                    frames = range(n_valid) if not grouping.frame_level else reference_frames(start, end, stride, offset, n_valid)
                    collected.setdefault(label, []).extend(values[b, :, m].double() for m in frames)
                    continue
                onset = reference_onset(start, stride, offset) if grouping.frame_level else 0
                if not 0 <= onset < n_valid:
                    continue
                for d in range(-window, window + 1):
                    if 0 <= onset + d < n_valid:
                        collected.setdefault((label, d), []).append(values[b, :, onset + d].double())
    return collected


def tmaps_valid(model, layer):
    def valid(length, n_frames):
        if layer == "head":
            return model.output_lengths(length[None])[0]
        blocks = model.hidden_names[: model.hidden_names.index(layer) + 1]
        for name in blocks:
            length = getattr(model, name).output_length(length[None])[0]
        return length

    return valid


def full_length(length, n_frames):
    return n_frames


@pytest.mark.parametrize("groups", ["phoneme", "word", "character", "speaker"])
def test_streaming_profiles_equal_brute_force_over_stored_activations(model, batches, groups):
    layers = list(TMAPS_LAYERS)
    profiles = NAP(model, layers).compute(batches, groups, normalize=None)
    grouping = resolve_grouping(groups)
    for layer in layers:
        assert profiles.metadata["frame_maps"][layer] == {"stride": 2, "offset": 0.0, "exact": True}
        values = [stored_outputs(model, [layer], batch, lambda b: model(b["features"], b["feature_lengths"]))[layer] for batch in batches]
        collected = brute_force(values, batches, grouping, *TMAPS_LAYERS[layer], tmaps_valid(model, layer))
        assert sorted(profiles.groups) == sorted(collected)
        result = profiles[layer]
        for row, group in enumerate(profiles.groups):
            stacked = torch.stack(collected[group])
            assert result.counts[row] == len(stacked)
            np.testing.assert_allclose(result.raw_mean[row], stacked.mean(0).numpy(), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(result.std[row], stacked.std(0, unbiased=False).numpy(), rtol=1e-6, atol=1e-6)


def test_counts_are_the_frames_inside_each_segment(model, batches):
    """At the input frame rate a phoneme [start, end) holds the frames n with start <= n / 100 < end."""
    identity = Wav2Letter(n_features=40, n_classes=29, channels=[8], kernel_sizes=[3], strides=[1])
    profiles = NAP(identity, ["conv0"]).compute(batches, "phoneme")
    expected = {}
    for batch in batches:
        for b, record in enumerate(batch["records"]):
            n_frames = int(batch["feature_lengths"][b])
            for label, start, end in record["phonemes"]:
                inside = sum(1 for n in range(n_frames) if start - 1e-9 <= n / 100 < end - 1e-9)
                nearest_to_middle = round((start + end) / 2 * 100)
                expected[label] = expected.get(label, 0) + (inside or int(nearest_to_middle < n_frames))
    assert profiles.group_counts["conv0"] == {label: expected[label] for label in profiles.all_groups}


@pytest.mark.filterwarnings("ignore:groups without frames")
def test_centred_and_zscored_profiles(model, batches):
    profiles = NAP(model, ["conv2"]).compute(batches, "phoneme_class", normalize="zscore")
    raw, result = profiles["conv2"].raw_mean, profiles["conv2"]
    centred = raw - raw.mean(axis=0)
    counts = result.counts[:, None]
    pooled_mean = (raw * counts).sum(0) / counts.sum()
    pooled_std = np.sqrt(((result.std**2 + raw**2) * counts).sum(0) / counts.sum() - pooled_mean**2)
    expected = np.where(pooled_std > 0, centred / np.where(pooled_std > 0, pooled_std, 1), 0.0)
    np.testing.assert_allclose(result.mean, expected, atol=1e-9)
    np.testing.assert_allclose(result.mean.mean(axis=0), 0.0, atol=1e-9)
    assert not np.isnan(result.mean).any()


@pytest.mark.filterwarnings("ignore:groups without frames")
def test_time_resolved_profiles_equal_brute_force(model, batches):
    window = 3
    profiles = NAP(model, ["conv2"]).compute(batches, "phoneme_class", window=window, normalize=None)
    values = [stored_outputs(model, ["conv2"], batch, lambda b: model(b["features"], b["feature_lengths"]))["conv2"] for batch in batches]
    grouping = resolve_grouping("phoneme_class")
    collected = brute_force(values, batches, grouping, 2, 0.0, tmaps_valid(model, "conv2"), window=window)
    result = profiles["conv2"]
    assert result.mean.shape == (len(profiles.groups), 32, 2 * window + 1)
    for row, group in enumerate(profiles.groups):
        for d in range(-window, window + 1):
            frames = collected.get((group, d), [])
            assert result.counts[row, d + window] == len(frames)
            if frames:
                np.testing.assert_allclose(result.raw_mean[row, :, d + window], torch.stack(frames).mean(0).numpy(), atol=1e-9)
            else:
                assert result.raw_mean.mask[row, :, d + window].all()


def test_group_without_frames_is_reported_never_nan(model, batches):
    grouping = SegmentGrouping("phonemes", label=phoneme_class, labels=[*PHONEME_CLASSES, "click"], name="classes")
    with pytest.warns(UserWarning, match="click"):
        profiles = NAP(model, ["conv0", "conv2"]).compute(batches, grouping)
    assert "click" in profiles.empty_groups and "click" not in profiles.groups
    assert profiles.group_counts["conv0"]["click"] == 0
    for layer in ("conv0", "conv2"):
        result = profiles[layer]
        assert len(result.mean) == len(profiles.groups)
        assert np.isfinite(result.mean).all() and np.isfinite(result.std).all()


def test_unknown_layer_lists_the_valid_names(model):
    with pytest.raises(ValueError, match=r"\['conv9'\].*'conv0', 'conv0.conv'"):
        NAP(model, ["conv0", "conv9"])


def test_missing_group_field_is_named(model, batches):
    with pytest.raises(ValueError, match="no field 'accent'"):
        NAP(model, ["conv0"]).compute(batches, "accent")
    stripped = [{**batch, "records": [{**r, "phonemes": []} for r in batch["records"]]} for batch in batches]
    with pytest.raises(ValueError, match="no 'phonemes' segments"):
        NAP(model, ["conv0"]).compute(stripped, "phoneme")


def test_torchaudio_wav2letter_profiles_equal_brute_force(torchaudio_model, single_batches):
    layers = list(TORCHAUDIO_LAYERS)
    profiles = NAP(torchaudio_model, layers).compute(single_batches, "word", normalize=None)
    grouping = resolve_grouping("word")
    for layer, (stride, offset) in TORCHAUDIO_LAYERS.items():
        assert profiles.metadata["frame_maps"][layer] == {"stride": stride, "offset": offset, "exact": True}
        values = [stored_outputs(torchaudio_model, [layer], batch, lambda b: torchaudio_model(b["features"]))[layer] for batch in single_batches]
        collected = brute_force(values, single_batches, grouping, stride, offset, full_length)
        for row, group in enumerate(profiles.groups):
            np.testing.assert_allclose(profiles[layer].raw_mean[row], torch.stack(collected[group]).mean(0).numpy(), rtol=1e-6, atol=1e-6)


def per_frame_objective(log_probs, targets, output_lengths):
    valid = torch.arange(log_probs.shape[1])[None] < output_lengths[:, None]
    return (log_probs.gather(-1, targets[..., None]).squeeze(-1) * valid).sum(dim=1)


def reference_aligned_targets(batch, n_frames, stride, offset, lengths):
    """Each word's span spread evenly over its characters, at the output frames; blank elsewhere."""
    targets = torch.zeros(len(batch["records"]), n_frames, dtype=torch.long)
    for b, record in enumerate(batch["records"]):
        for word, start, end in record["words"]:
            step = (end - start) / len(word)
            for i, char in enumerate(word):
                for m in reference_frames(start + i * step, start + (i + 1) * step, stride, offset, int(lengths[b])):
                    targets[b, m] = ENGLISH.index(char)
    return targets


@pytest.mark.parametrize("target", ["predicted", "aligned"])
@pytest.mark.parametrize("multiply", [True, False])
def test_gradnap_equals_captum_per_group_means(model, batches, target, multiply):
    layers = ["conv0", "conv2"]
    profiles = GradNAP(model, layers, target=target, multiply_by_activation=multiply).compute(batches, "phoneme", normalize=None)
    grouping = resolve_grouping("phoneme")
    for layer in layers:
        attributions = []
        for batch in batches:
            with torch.no_grad():
                log_probs, lengths = model(batch["features"], batch["feature_lengths"])
            targets = log_probs.argmax(-1) if target == "predicted" else reference_aligned_targets(batch, log_probs.shape[1], 2, 0.0, lengths)

            def objective(features, feature_lengths, targets):
                log_probs, output_lengths = model(features, feature_lengths)
                return per_frame_objective(log_probs, targets, output_lengths)

            captum = LayerGradientXActivation(objective, model.get_submodule(layer), multiply_by_inputs=multiply)
            attributions.append(captum.attribute(batch["features"], additional_forward_args=(batch["feature_lengths"], targets)).detach())
        collected = brute_force(attributions, batches, grouping, 2, 0.0, tmaps_valid(model, layer))
        for row, group in enumerate(profiles.groups):
            expected = torch.stack(collected[group]).mean(0).numpy()
            np.testing.assert_allclose(profiles[layer].raw_mean[row], expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())


def test_another_attribution_replaces_only_attribute_and_is_aggregated_alike(model, batches):
    class GradientOnly(GradientAttribution):
        kind = "gradient"

        def attribute(self, run, emit):
            activations, result = self.layer_activations(run)
            gradients = torch.autograd.grad(self.objective(run, result), [activations[layer] for layer in run.layers])
            for layer, gradient in zip(run.layers, gradients):
                emit(layer, gradient)

    layers = ["conv0", "conv2"]
    mine = Profiler(model, layers, GradientOnly(target="predicted")).compute(batches, "phoneme", normalize=None)
    builtin = GradNAP(model, layers, target="predicted", multiply_by_activation=False).compute(batches, "phoneme", normalize=None)
    for layer in layers:
        np.testing.assert_allclose(mine[layer].raw_mean, builtin[layer].raw_mean, rtol=1e-6, atol=1e-9)
        assert np.abs(mine[layer].raw_mean).max() > 0


def test_gradnap_on_torchaudio_equals_captum(torchaudio_model, single_batches):
    layer = "acoustic_model.1"
    profiles = GradNAP(torchaudio_model, [layer], target="predicted").compute(single_batches, "word", normalize=None)
    attributions = []
    for batch in single_batches:
        with torch.no_grad():
            targets = torchaudio_model(batch["features"]).argmax(1)

        def objective(features, targets):
            log_probs = torchaudio_model(features).log_softmax(1).transpose(1, 2)
            return per_frame_objective(log_probs, targets, torch.tensor([log_probs.shape[1]]))

        captum = LayerGradientXActivation(objective, torchaudio_model.get_submodule(layer))
        attributions.append(captum.attribute(batch["features"], additional_forward_args=(targets,)).detach())
    collected = brute_force(attributions, single_batches, resolve_grouping("word"), 2, 0.5, full_length)
    for row, group in enumerate(profiles.groups):
        expected = torch.stack(collected[group]).mean(0).numpy()
        np.testing.assert_allclose(profiles[layer].raw_mean[row], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_aligned_targets_follow_the_characters_of_the_words(model, batches):
    gradnap = GradNAP(model, ["conv0"])
    gradnap.compute(batches[:1], "phoneme")
    batch = batches[0]
    with torch.no_grad():
        log_probs, lengths = model(batch["features"], batch["feature_lengths"])
    targets = gradnap.attribution.frame_targets(batch, log_probs, lengths, gradnap._frame_maps["<output>"], gradnap.frame_rate)
    assert torch.equal(targets, reference_aligned_targets(batch, log_probs.shape[1], 2, 0.0, lengths))
    assert (targets > 0).float().mean() > 0.5


@pytest.mark.filterwarnings("ignore:groups without frames")
def test_save_and_load_round_trip(model, batches, tmp_path):
    for window in (None, 2):
        profiles = NAP(model, ["conv0", "conv2"]).compute(batches, "phoneme_class", window=window, normalize="zscore")
        loaded = Profiles.load(profiles.save(tmp_path / f"profiles-{window}.npz"))
        assert loaded.metadata == profiles.metadata
        assert loaded.metadata["kind"] == "NAP" and loaded.metadata["grouping"] == "phoneme_class"
        for layer in profiles.layers:
            for field in ("mean", "raw_mean", "std", "counts"):
                np.testing.assert_allclose(getattr(loaded[layer], field), getattr(profiles[layer], field), rtol=1e-12, atol=1e-15)
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz is not a tmaps profiles file"):
        Profiles.load(tmp_path / "other.npz")


def test_two_halves_merged_equal_one_pass(model, batches):
    nap = NAP(model, ["conv0", "head"])
    whole = nap.compute(batches, "phoneme", window=2)
    first, second = nap.compute(batches[:1], "phoneme", window=2), nap.compute(batches[1:], "phoneme", window=2)
    assert set(first.all_groups) != set(whole.all_groups)
    merged = first.merge(second)
    assert sorted(merged.groups) == whole.groups
    order = [merged.groups.index(group) for group in whole.groups]
    for layer in whole.layers:
        for field in ("mean", "raw_mean", "std", "counts"):
            np.testing.assert_allclose(getattr(merged[layer], field)[order], getattr(whole[layer], field), atol=1e-9)


def test_all_reduce_in_a_process_group_keeps_the_sums(model, batches, tmp_path):
    import torch.distributed as dist

    profiles = NAP(model, ["conv0"]).compute(batches, "word")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        reduced = profiles.all_reduce()
    finally:
        dist.destroy_process_group()
    assert reduced.all_groups == profiles.all_groups
    np.testing.assert_array_equal(reduced.sums["conv0"], profiles.sums["conv0"])
    np.testing.assert_array_equal(reduced.counts["conv0"], profiles.counts["conv0"])


def test_linear_layer_takes_utterance_level_groups_only(batches):
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(40, 6, 5, padding=2)
            self.linear = torch.nn.Linear(6, 4)

        def forward(self, features):
            return self.linear(self.conv(features).mean(-1))[..., None]

    model = Pooled()
    with pytest.warns(UserWarning, match="Pooled is not padding-invariant"):  # its mean runs over the padding too
        profiles = NAP(model, ["linear"]).compute(batches, "speaker", normalize=None)
    outputs = [model.linear(model.conv(b["features"]).mean(-1)).detach() for b in batches]
    speakers = [r["speaker"] for b in batches for r in b["records"]]
    stacked = torch.cat(outputs)
    for row, speaker in enumerate(profiles.groups):
        rows = [i for i, s in enumerate(speakers) if s == speaker]
        np.testing.assert_allclose(profiles["linear"].raw_mean[row], stacked[rows].mean(0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="layer 'linear' has no time axis"):
        NAP(model, ["linear"]).compute(batches, "phoneme")


def test_custom_groupings(model, batches):
    is_long = RecordGrouping(label=lambda record: "long" if record["duration"] > 1.5 else "short", name="length")
    profiles = NAP(model, ["conv0"]).compute(batches, is_long)
    assert set(profiles.groups) <= {"long", "short"} and profiles.metadata["grouping"] == "length"
    vowels = CharacterGrouping(label=lambda char: char if char in "aeiou" else None)
    assert set(NAP(model, ["conv0"]).compute(batches, vowels).groups) <= set("aeiou")


def test_phoneme_classes_cover_the_corpus_symbols(synth_corpus_en, synth_corpus_de):
    for corpus, expected in ((synth_corpus_en, {"vowel", "diphthong", "plosive", "fricative", "nasal", "approximant"}),
                             (synth_corpus_de, {"vowel", "diphthong", "plosive", "fricative", "nasal", "approximant"})):
        symbols = {label for record in read_manifest(corpus / "train.jsonl") for label, _, _ in record["phonemes"]}
        classes = {symbol: phoneme_class(symbol) for symbol in symbols}
        assert set(classes.values()) <= set(PHONEME_CLASSES)
        assert expected <= set(classes.values())
    assert [phoneme_class(s) for s in ["@", "aI", "tS", "dZ", "ts", "pF", "D", "C", "x", "N", "@L", "r-", "_:", "UR", "A@", "2:", "W"]] == [
        "vowel", "diphthong", "affricate", "affricate", "affricate", "affricate", "fricative", "fricative", "fricative",
        "nasal", "approximant", "approximant", "silence", "diphthong", "vowel", "vowel", "vowel"]
    with pytest.raises(ValueError, match="unknown espeak phoneme symbol '!!'"):
        phoneme_class("!!")


def test_frozen_parameters_and_training_mode(batches):
    torch.manual_seed(1)
    model = Wav2Letter(n_features=40, n_classes=ENGLISH.n_classes, channels=[16, 16], kernel_sizes=[5, 3], strides=[2, 1], norm="batch", dropout=0.3)
    model.train()
    trainable = GradNAP(model, ["conv0", "conv1"], target="predicted").compute(batches, "phoneme")
    assert model.training and all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    frozen = GradNAP(model, ["conv0", "conv1"], target="predicted").compute(batches, "phoneme")
    for layer in ("conv0", "conv1"):
        np.testing.assert_allclose(frozen[layer].mean, trainable[layer].mean, rtol=1e-9)


# ---------------------------------------------------------------- padding: invariance, detection, exact mode (fp32)


@pytest.fixture(scope="module")
def batchings(synth_corpus_en, tmp_path_factory):
    """The same 8 utterances as one padded batch, as three padded batches of mixed lengths, and one by one."""
    records = read_manifest(synth_corpus_en / "train.jsonl")[:8]
    dataset = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"train": "train.jsonl"}},
        root=str(tmp_path_factory.mktemp("batchings")),
    )
    dataset.prepare_data()
    dataset = dataset.dataset("train")
    items = [dataset[i] for i in range(len(records))]
    by_length = np.argsort([item["features"].shape[-1] for item in items])
    batchings = {
        "one batch": [collate(items)],
        "three batches": [collate([items[i] for i in by_length[start::3]]) for start in range(3)],
        "one by one": [collate([item]) for item in items],
    }
    assert all(len(set(batch["feature_lengths"].tolist())) > 1 for batch in batchings["three batches"])
    return batchings


@pytest.mark.parametrize("kind", [NAP, GradNAP])
def test_profiles_of_a_masked_model_do_not_depend_on_the_batching(model, batchings, kind):
    """fp32: tmaps' Wav2Letter gives the same NAPs and GradNAPs over one batch, three batches and one utterance at a time."""
    layers = ["conv0", "conv2", "head"]
    profiles = {name: kind(model, layers).compute(batches, "phoneme", normalize=None) for name, batches in batchings.items()}
    alone = profiles["one by one"]
    assert alone.info["padding_invariant"] is None  # no batch was padded: nothing to check
    for name in ("one batch", "three batches"):
        assert profiles[name].info["padding_invariant"] is True and not profiles[name].info["exact"]
        for layer in layers:
            np.testing.assert_array_equal(profiles[name].counts[layer], alone.counts[layer])
            expected = alone[layer].raw_mean
            np.testing.assert_allclose(profiles[name][layer].raw_mean, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_a_model_that_lets_padding_leak_is_detected_and_exact_mode_equals_brute_force(torchaudio_model, model, batchings, tmp_path):
    """fp32: torchaudio's Wav2Letter does not mask padding: the first padded batch says so (warning and metadata), and
    exact mode runs every utterance alone, giving the profiles of stored per-utterance activations."""
    layers = list(TORCHAUDIO_LAYERS)
    with pytest.warns(UserWarning, match=r"Wav2Letter is not padding-invariant.*acoustic_model.17.*exact=True"):
        batched = NAP(torchaudio_model, layers).compute(batchings["one batch"], "word", normalize=None)
    assert batched.info["padding_invariant"] is False and batched.info["padding_differences"]["acoustic_model.17"] > 0.1
    saved = Profiles.load(batched.save(tmp_path / "profiles.npz"))
    assert saved.info["padding_invariant"] is False
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*padding-invariant")
        NAP(model, ["conv0"]).compute(batchings["one batch"], "word")

    alone = []  # (outputs of every layer, batch of one) per utterance, without padding
    for batch in batchings["one by one"]:
        alone.append((stored_outputs(torchaudio_model, layers, batch, lambda b: torchaudio_model(b["features"])), batch))
    grouping = resolve_grouping("word")
    for name in ("one batch", "three batches"):
        exact = NAP(torchaudio_model, layers, exact=True).compute(batchings[name], "word", normalize=None)
        assert exact.info["exact"] is True
        for layer, (stride, offset) in TORCHAUDIO_LAYERS.items():
            collected = brute_force([outputs[layer] for outputs, _ in alone], [batch for _, batch in alone], grouping, stride, offset, full_length)
            for row, group in enumerate(exact.groups):
                np.testing.assert_allclose(exact[layer].raw_mean[row], torch.stack(collected[group]).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    deep = "acoustic_model.17"
    leak = np.abs(batched[deep].raw_mean - exact[deep].raw_mean).max() / np.abs(exact[deep].raw_mean).max()
    assert leak > 0.01, f"without exact mode the padding should move the profiles, by {leak:.2%} here"


def test_gradnap_in_exact_mode_equals_gradnap_one_utterance_at_a_time(batchings):
    """fp32: on a plain conv stack whose padding leaks, exact GradNAPs of padded batches are those without padding."""
    torch.manual_seed(0)
    leaky = torch.nn.Sequential(
        torch.nn.Conv1d(40, 16, 11, stride=2, padding=5), torch.nn.ReLU(),
        torch.nn.Conv1d(16, 16, 7, padding=3), torch.nn.ReLU(),
        torch.nn.Conv1d(16, ENGLISH.n_classes, 1),
    ).eval()
    layers = ["1", "3"]
    alone = GradNAP(leaky, layers, target="predicted").compute(batchings["one by one"], "phoneme", normalize=None)
    with pytest.warns(UserWarning, match="Sequential is not padding-invariant"):
        batched = GradNAP(leaky, layers, target="predicted").compute(batchings["three batches"], "phoneme", normalize=None)
    exact = GradNAP(leaky, layers, target="predicted", exact=True).compute(batchings["three batches"], "phoneme", normalize=None)
    assert exact.info["exact"] is True and batched.info["padding_invariant"] is False
    for layer in layers:
        expected = alone[layer].raw_mean
        np.testing.assert_allclose(exact[layer].raw_mean, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert not np.allclose(batched["3"].raw_mean, alone["3"].raw_mean, rtol=1e-3, atol=1e-3 * np.abs(alone["3"].raw_mean).max())


def profiles_v1_maker():
    """``tests/data/profiles_v1/make.py``: the model and batches its profiles were computed on."""
    spec = importlib.util.spec_from_file_location("profiles_v1_make", PROFILES_V1 / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "attribution", "groups", "options"),
    [
        ("nap.npz", None, "phoneme", {}),
        ("nap_window.npz", None, "character", {"window": 2, "normalize": "zscore"}),
        ("gradnap_aligned.npz", GradientXActivation(), "phoneme", {}),
        ("gradnap_predicted.npz", GradientXActivation(target="predicted", multiply_by_activation=False), "word", {"normalize": None}),
    ],
)
@pytest.mark.filterwarnings("ignore:groups without frames")
def test_profiles_written_before_the_profiler_was_split_load_and_are_computed_alike(name, attribution, groups, options):
    """fp32: profiles files of tmaps 09ec0bf (``tests/data/profiles_v1/make.py``) load, and the profiler gives their statistics again."""
    make = profiles_v1_maker()
    stored = Profiles.load(PROFILES_V1 / name)
    again = Profiler(make.model(), make.LAYERS, attribution).compute(make.batches(), groups, **options)
    assert (stored.all_groups, stored.layers, stored.window, stored.normalize) == (again.all_groups, again.layers, again.window, again.normalize)
    varying = ("tmaps_version", "padding_differences")
    assert {k: v for k, v in stored.info.items() if k not in varying} == {k: v for k, v in again.info.items() if k not in varying}
    for layer in stored.layers:
        np.testing.assert_array_equal(stored.counts[layer], again.counts[layer])
        for statistic in ("sums", "squares"):
            expected = getattr(stored, statistic)[layer]
            np.testing.assert_allclose(getattr(again, statistic)[layer], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
