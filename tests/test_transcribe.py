"""``tmaps-transcribe`` and ``Transcriber``: chunked decoding of a several-minute file, resampling and
downmix, timings, bad input, ``trainer.predict``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile
import torch
import torchaudio
from test_introspect_cli import train_checkpoint

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.transcribe import transcribe
from tmaps.data import SpeechDataModule
from tmaps.data.manifest import read_manifest
from tmaps.inference import Transcriber
from tmaps.inference.transcriber import read_audio
from tmaps.training.module import ASRModule

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(synth_corpus_en, tmp_path_factory) -> Path:
    return train_checkpoint(synth_corpus_en, tmp_path_factory.mktemp("transcribe"))


@pytest.fixture(scope="module")
def utterances(synth_corpus_en) -> list[dict]:
    return read_manifest(synth_corpus_en / "test.jsonl")


@pytest.fixture(scope="module")
def long_file(synth_corpus_en, tmp_path_factory) -> Path:
    """Every utterance of the tiny corpus spoken one after the other, three times: several minutes."""
    records = [record for split in ("train", "dev", "test", "test_unseen") for record in read_manifest(synth_corpus_en / f"{split}.jsonl")]
    audio = np.concatenate([soundfile.read(record["audio"], dtype="float32")[0] for record in records] * 3)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    soundfile.write(path, audio, 16_000)
    return path


def test_a_several_minute_file_decoded_in_chunks_equals_one_pass(checkpoint, long_file):
    loaded = load_checkpoint(checkpoint)
    waveform = read_audio(long_file)
    assert waveform.numel() / 16_000 > 180
    whole = Transcriber(loaded.model, loaded.alphabet, loaded.features, chunk_s=None).log_probs(waveform)
    chunked = Transcriber(loaded.model, loaded.alphabet, loaded.features, chunk_s=20.0).log_probs(waveform)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


def test_stereo_and_other_sample_rates_are_downmixed_and_resampled(utterances, tmp_path):
    original, _ = soundfile.read(utterances[0]["audio"], dtype="float32")
    at_44k = torchaudio.functional.resample(torch.from_numpy(original), 16_000, 44_100).numpy()
    stereo = np.stack([at_44k * 0.5, at_44k * 1.5], axis=1)  # the channel mean is the signal
    path = tmp_path / "stereo_44k.flac"
    soundfile.write(path, stereo, 44_100)
    waveform = read_audio(path).numpy()
    assert abs(len(waveform) - len(original)) <= 1
    n = min(len(waveform), len(original))
    assert np.corrcoef(waveform[:n], original[:n])[0, 1] > 0.99


def test_word_and_character_timings_lie_in_the_file_and_spell_the_transcript(checkpoint, utterances):
    loaded = load_checkpoint(checkpoint)
    transcriber = Transcriber(loaded.model, loaded.alphabet, loaded.features)
    result = transcriber.transcribe_file(utterances[0]["audio"], timings=True)
    assert result["text"]
    assert [word for word, _, _ in result["words"]] == result["text"].split()
    assert "".join(char for char, _, _ in result["characters"]) == result["text"].replace(" ", "")
    times = [time for _, start, end in result["characters"] for time in (start, end)]
    assert times == sorted(times) and all(0 <= time <= result["duration"] for time in times)


def test_bad_inputs_are_named_and_the_other_files_transcribed(checkpoint, utterances, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "notes.flac"
    garbage.write_text("not audio at all")
    silent = tmp_path / "no_samples.wav"
    soundfile.write(silent, np.zeros(0, dtype="float32"), 16_000)
    no_audio = tmp_path / "no_audio"
    no_audio.mkdir()
    (no_audio / "readme.txt").write_text("nothing to hear")
    good = tmp_path / "good"
    good.mkdir()
    for record in utterances[:2]:
        (good / Path(record["audio"]).name).write_bytes(Path(record["audio"]).read_bytes())
    output = tmp_path / "out" / "transcripts.jsonl"
    config = {"ckpt_path": str(checkpoint), "inputs": [str(empty), str(garbage), str(silent), str(no_audio), str(good)], "output": str(output)}
    with pytest.raises(SystemExit):
        transcribe(config)
    errors = capsys.readouterr().err
    for culprit in (empty, garbage, silent, no_audio):
        assert str(culprit) in errors
    assert "holds no audio samples" in errors and "folder holds no audio file" in errors
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(Path(result["file"]).name for result in written) == sorted(Path(r["audio"]).name for r in utterances[:2])


def test_a_too_short_file_and_a_file_with_nan_or_infinite_samples_are_named_with_their_fault(checkpoint, utterances, tmp_path, capsys):
    """A 200-sample file once crashed the whole job in the spectrogram's padding, and NaN audio gave an empty transcript."""
    short = tmp_path / "click.wav"
    soundfile.write(short, np.full(200, 0.1, dtype="float32"), 16_000)
    speech, _ = soundfile.read(utterances[0]["audio"], dtype="float32")
    broken = tmp_path / "broken.wav"
    speech[8000:8003] = [np.nan, np.inf, np.nan]
    soundfile.write(broken, speech, 16_000, subtype="FLOAT")
    good = [tmp_path / Path(record["audio"]).name for record in utterances[:2]]
    for path, record in zip(good, utterances):
        path.write_bytes(Path(record["audio"]).read_bytes())
    output = tmp_path / "transcripts.jsonl"
    config = {"ckpt_path": str(checkpoint), "inputs": [str(good[0]), str(short), str(broken), str(good[1])], "output": str(output)}
    with pytest.raises(SystemExit):
        transcribe(config)
    errors = capsys.readouterr().err.splitlines()
    assert f"tmaps-transcribe: skipped {short}: too short to transcribe: 200 samples (12.5 ms) at 16 kHz, at least 201 (12.6 ms) needed" in errors
    assert f"tmaps-transcribe: skipped {broken}: 3 of {len(speech)} samples are not finite (NaN and infinite, the first at 0.500 s at 16 kHz)" in errors
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [result["file"] for result in written] == [str(path) for path in good] and all(result["text"] for result in written)


def test_the_command_writes_csv_with_word_timings(checkpoint, utterances, tmp_path):
    output = tmp_path / "transcripts.csv"
    command = [sys.executable, "-m", "tmaps.commands.transcribe", f"ckpt_path={checkpoint}", f"inputs=[{utterances[0]['audio']},{utterances[1]['audio']}]"]
    command += [f"output={output}", "timings=true", f"hydra.run.dir={tmp_path / 'run'}"]
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=300)
    rows = list(csv.DictReader(output.open()))
    assert [row["file"] for row in rows] == [utterances[0]["audio"], utterances[1]["audio"]]
    for row in rows:
        assert [word for word, _, _ in json.loads(row["words"])] == row["text"].split()


def test_trainer_predict_yields_a_transcript_per_test_utterance(checkpoint, synth_corpus_en, tmp_path):
    module = ASRModule.from_checkpoint(checkpoint)
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"test": "test.jsonl"}},
        root=str(tmp_path),
        batching={"num_workers": 0},
    )
    data.prepare_data()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    batches = trainer.predict(module, datamodule=data)
    predictions = [prediction for batch in batches for prediction in batch]
    assert sorted(p["id"] for p in predictions) == sorted(r["id"] for r in read_manifest(synth_corpus_en / "test.jsonl"))
    assert all(isinstance(p["text"], str) for p in predictions)
