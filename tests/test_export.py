"""``tmaps-export``: ONNX (onnxruntime) and the ``torch.export`` program match PyTorch on real utterances;
the state dict loads without Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_introspect_cli import train_checkpoint

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.export import export
from tmaps.data import SpeechDataModule
from tmaps.inference.export import FORMATS, run_exported

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(synth_corpus_en, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("export")
    checkpoint = train_checkpoint(synth_corpus_en, folder)
    differences = export({"ckpt_path": str(checkpoint), "output_dir": str(folder / "out"), "formats": list(FORMATS)})
    assert set(differences) == set(FORMATS)
    return checkpoint, folder / "out"


@pytest.fixture(scope="module")
def real_batch(synth_corpus_en, tmp_path_factory) -> dict:
    """Test utterances of the synthetic corpus as one zero-padded batch of several lengths."""
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"test": "test.jsonl"}},
        root=str(tmp_path_factory.mktemp("cache")),
        batching={"num_workers": 0, "max_batch_seconds": 1000},
    )
    data.prepare_data()
    (batch,) = list(data.loader("test"))
    assert len(set(batch["feature_lengths"].tolist())) > 1
    return batch


@pytest.mark.parametrize("kind", FORMATS)
def test_exported_model_matches_pytorch_on_real_utterances(kind, exported, real_batch):
    checkpoint, folder = exported
    model = load_checkpoint(checkpoint).model
    with torch.no_grad():
        expected, expected_lengths = model(real_batch["features"], real_batch["feature_lengths"])
    path = folder / {"onnx": "model.onnx", "program": "model.pt2", "state_dict": "model_state.pt"}[kind]
    log_probs, output_lengths = run_exported(path, real_batch["features"], real_batch["feature_lengths"])
    assert torch.equal(output_lengths.long(), expected_lengths)
    torch.testing.assert_close(log_probs, expected, atol=1e-4, rtol=0)
    # One utterance alone: batch size and time differ from the traced example.
    alone = (real_batch["features"][:1, :, : real_batch["feature_lengths"][0]], real_batch["feature_lengths"][:1])
    with torch.no_grad():
        expected_alone, _ = model(*alone)
    torch.testing.assert_close(run_exported(path, *alone)[0], expected_alone, atol=1e-4, rtol=0)


def test_state_dict_and_model_card_are_usable_without_lightning(exported):
    _, folder = exported
    card = json.loads((folder / "model.json").read_text())
    assert card["classes"][0] == "<blank>" and card["features"]["hop_length"] == 160
    script = (
        "import sys, torch\n"
        "from tmaps.inference.export import load_exported_state_dict\n"
        f"model, alphabet, features = load_exported_state_dict({str(folder / 'model_state.pt')!r})\n"
        "log_probs, _ = model(torch.zeros(1, features['n_mels'], 50), torch.tensor([50]))\n"
        "assert log_probs.shape[-1] == alphabet.n_classes\n"
        "assert not any(name.startswith(('pytorch_lightning', 'lightning', 'hydra')) for name in sys.modules), 'Lightning was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)


def test_a_file_that_is_no_export_is_named(tmp_path):
    bogus = tmp_path / "model_state.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match=str(bogus)):
        run_exported(bogus, torch.zeros(1, 40, 20), torch.tensor([20]))
