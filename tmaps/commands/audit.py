"""What ``tmaps-audit`` does: a bias audit of a checkpoint on a corpus split, by any grouping of its records.

``tmaps-audit ckpt_path=<file.ckpt> data=<corpus> groups=gender`` profiles every layer (or
``layers``) per group and utterance (:class:`tmaps.introspect.bias.PerUtterance`), then writes
:func:`tmaps.studies.audit.write_audit`'s ``audit.json`` and ``audit.png`` into ``output_dir``:
the two groups' maps and their difference on one layout and colour limit, the split-half noise
floor beside them, frames per group, and the separation ratio with its permutation p per layer.

Groups are any record field (``gender``, ``speaker``, ``noise_color``), a numeric field cut at
``bins`` (``groups=babble_snr_db bins=[0,10,20]``), or ``character``/``phoneme``/``word``
(segments from the manifest); ``compare=[a,b]`` picks two of them. Any other model is audited
from Python: profile it with ``PerUtterance(grouping)`` and pass the profiles to ``audit_bias``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.introspect import resolve_grouping
from tmaps.introspect.bias import PerUtterance, binned_grouping
from tmaps.studies.audit import BiasAudit, audit_bias, write_audit
from tmaps.studies.profiles import checkpoint_profiles


def audit(cfg: DictConfig) -> BiasAudit:
    """The audit of ``cfg.ckpt_path`` on ``cfg.split`` of ``cfg.data``, written to ``cfg.output_dir``."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ValueError("ckpt_path is not set: name the checkpoint to audit, ckpt_path=<file.ckpt>")
    options = OmegaConf.to_container(cfg, resolve=True)
    grouping = resolve_grouping(options["groups"]) if options["bins"] is None else binned_grouping(options["groups"], options["bins"])
    checkpoint = load_checkpoint(options["ckpt_path"])
    profiles = checkpoint_profiles(
        checkpoint,
        options["data"],
        split=options["split"],
        layers=options["layers"],
        groups=PerUtterance(grouping),
        normalize=None,
        max_utterances=options["max_utterances"],
        align="never",
        device=options["device"],
    )
    result = audit_bias(profiles, options["compare"], options["splits"], options["permutations"], options["layout"])
    write_audit(result, options["output_dir"])
    return result


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="audit")
@task_wrapper("tmaps-audit")
def main(cfg: DictConfig) -> None:
    """``tmaps-audit ckpt_path=... data=... groups=gender``: group maps, their difference, the noise floor and the statistic per layer."""
    result = audit(cfg)
    a, b = result.groups
    print(f"{result.grouping}: {a} against {b}, {result.utterances} utterances; written to {cfg.output_dir}")
    for layer in result.layers:
        print(f"{layer.layer}: separation {layer.ratio:.3f} (p {layer.p:.3g}), frames {layer.frames[a]} / {layer.frames[b]}")


if __name__ == "__main__":
    main()
