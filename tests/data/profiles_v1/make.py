"""Made these fixtures: NAP and GradNAP profiles written by tmaps 09ec0bf, before the profiler was split by concept.

    git worktree add ../tmaps-09ec0bf 09ec0bf && cd tests/data/profiles_v1 && PYTHONPATH=../../../../tmaps-09ec0bf python make.py

Writes ``nap.npz`` (time-independent, centred), ``nap_window.npz`` (time-resolved, z-scored),
``gradnap_aligned.npz`` and ``gradnap_predicted.npz`` (gradient only): format-1 profiles files of a
tiny seeded ``Wav2Letter`` over :func:`batches`. ``tests/test_nap.py`` loads them and recomputes them.
"""

import torch

from tmaps.models import Wav2Letter
from tmaps.text import Alphabet

ALPHABET = Alphabet.for_language("en")
LAYERS = ["conv0", "conv2"]
TEXTS = ["a bad cab", "bead", "dab a cad", "bed"]


def model() -> Wav2Letter:
    torch.manual_seed(0)
    return Wav2Letter(n_features=40, n_classes=ALPHABET.n_classes, channels=[8, 8, 12], kernel_sizes=[11, 7, 1], strides=[2, 1, 1]).eval()


def record(index: int, text: str, seconds: float) -> dict:
    """Words over the whole utterance, in proportion to their length; one phoneme per letter."""
    words, phonemes, start = [], [], 0.0
    step = seconds / len(text.replace(" ", ""))
    for word in text.split():
        words.append([word, start, start + step * len(word)])
        phonemes += [[char, start + i * step, start + (i + 1) * step] for i, char in enumerate(word)]
        start += step * len(word)
    return {"id": f"utt{index}", "text": text, "words": words, "phonemes": phonemes}


def batches() -> list[dict]:
    """Two padded batches of random log-mel features."""
    generator = torch.Generator().manual_seed(1)
    made = []
    for texts, lengths in ((TEXTS[:2], [80, 57]), (TEXTS[2:], [96, 70])):
        features = torch.randn(len(lengths), 40, max(lengths), generator=generator)
        for i, n in enumerate(lengths):
            features[i, :, n:] = 0
        encoded = [ALPHABET.encode(text) for text in texts]
        targets = torch.zeros(len(texts), max(map(len, encoded)), dtype=torch.long)
        for i, classes in enumerate(encoded):
            targets[i, : len(classes)] = torch.tensor(classes)
        records = [record(len(made) * 2 + i, text, n / 100) for i, (text, n) in enumerate(zip(texts, lengths))]
        made.append({"features": features, "feature_lengths": torch.tensor(lengths), "targets": targets,
                     "target_lengths": torch.tensor(list(map(len, encoded))), "records": records})
    return made


if __name__ == "__main__":
    from tmaps.introspect.nap import NAP, GradNAP

    network, data = model(), batches()
    NAP(network, LAYERS).compute(data, "phoneme").save("nap.npz")
    NAP(network, LAYERS).compute(data, "character", window=2, normalize="zscore").save("nap_window.npz")
    GradNAP(network, LAYERS).compute(data, "phoneme").save("gradnap_aligned.npz")
    GradNAP(network, LAYERS, target="predicted", multiply_by_activation=False).compute(data, "word", normalize=None).save("gradnap_predicted.npz")
