"""Made these fixtures: tiny checkpoints of tmaps 5927a59, the last Wav2Letter without padding masks.

    git worktree add ../tmaps-5927a59 5927a59 && cd tests/data/pre_masking && PYTHONPATH=../../../../tmaps-5927a59 python make.py

Writes ``<norm>.ckpt`` (Lightning checkpoints after one short epoch on random batches, so that
BatchNorm has running statistics) and ``<norm>_reference.pt`` (an unpadded input and the old
model's log-probabilities for it) for ``norm`` in batch and layer.
"""

import pytorch_lightning as pl
import torch

from tmaps.text import Alphabet
from tmaps.training.module import ASRModule

alphabet = Alphabet.for_language("en")
for norm in ("batch", "layer"):
    pl.seed_everything(0)
    module = ASRModule(model={"channels": [8, 8, 12], "kernel_sizes": [11, 7, 1], "strides": [2, 1, 1], "norm": norm},
                       alphabet=alphabet.chars, features={"n_mels": 40, "log_floor": 1e-6}, optim={"lr": 1e-2, "schedule": "constant"})
    generator = torch.Generator().manual_seed(1)

    def batch(lengths, generator=generator):
        features = torch.randn(len(lengths), 40, max(lengths), generator=generator)
        for i, n in enumerate(lengths):
            features[i, :, n:] = 0
        targets = torch.randint(1, alphabet.n_classes, (len(lengths), 5), generator=generator)
        return {"features": features, "feature_lengths": torch.tensor(lengths), "targets": targets,
                "target_lengths": torch.tensor([5] * len(lengths)), "records": [{"text": "x"}] * len(lengths)}
    train = [batch([120, 90, 60]) for _ in range(4)]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=".")
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(train, batch_size=None))
    trainer.save_checkpoint(f"{norm}.ckpt", weights_only=True)
    probe = torch.randn(1, 40, 60, generator=torch.Generator().manual_seed(2))
    module.eval()
    with torch.no_grad():
        log_probs, lengths = module.model(probe, torch.tensor([60]))
    torch.save({"features": probe, "log_probs": log_probs}, f"{norm}_reference.pt")
