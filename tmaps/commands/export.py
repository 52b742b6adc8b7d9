"""``tmaps-export``: a checkpoint as ONNX, a ``torch.export`` program and a plain state dict."""

from __future__ import annotations

from collections.abc import Mapping

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.inference.export import example_inputs, export_model, run_exported


def export(config: Mapping) -> dict[str, float]:
    """Export ``config["ckpt_path"]`` in ``config["formats"]`` to ``config["output_dir"]``
    (which must not hold an earlier export unless ``config["overwrite"]``).

    Each exported file is run on a fresh random batch of other sizes than the traced one and
    compared with the PyTorch model; returns and prints the largest absolute difference of the
    log-probabilities per format.
    """
    checkpoint = load_checkpoint(config["ckpt_path"])
    arguments = checkpoint.hyper_parameters["model"]
    paths = export_model(
        checkpoint.model, arguments, checkpoint.alphabet, checkpoint.features, config["output_dir"], config["formats"], overwrite=config.get("overwrite", False)
    )
    features, lengths = example_inputs(arguments["n_features"], lengths=(531, 377, 64))
    with torch.no_grad():
        expected, expected_lengths = checkpoint.model(features, lengths)
    differences = {}
    for kind, path in paths.items():
        if kind == "card":
            continue
        log_probs, output_lengths = run_exported(path, features, lengths)
        if not torch.equal(output_lengths.long(), expected_lengths):
            raise RuntimeError(f"{path}: output lengths {output_lengths.tolist()} differ from PyTorch's {expected_lengths.tolist()}")
        differences[kind] = float((log_probs - expected).abs().max())
        print(f"{kind:<11} {path}  max |log_probs - PyTorch| = {differences[kind]:.2e}")
    print(f"model card  {paths['card']}")
    return differences


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="export")
@task_wrapper("tmaps-export")
def main(cfg: DictConfig) -> None:
    """``tmaps-export ckpt_path=...``: ONNX, ``torch.export`` program and plain state dict of a checkpoint (see conf/export.yaml)."""
    export(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
