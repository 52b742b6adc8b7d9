"""The topography study: how much topography a loss buys, and how much filter diversity it costs.

Each setting (a topographic loss, its layers and its weight) is trained over seeds on the
quickstart recipe (``conf/study/topography.yaml``); each run leaves a record
(:mod:`tmaps.studies.runs`) with, besides its curve and per-utterance test errors:

- per conv layer, the weight metrics of :func:`tmaps.topo.topography_metrics`: neighbour ratio,
  smoothness, random-pair cosine of centred filters and the participation ratio (the effective
  number of distinct filters); layers without a topographic loss are measured in channel order;
- per topographic layer, Moran's I of the phoneme NAP maps on the layer's grid (mean over
  phonemes) with the permutation p of that mean (one placement of the units shared by every
  phoneme per permutation), and a TDANN-style curve of the units' profile similarity against
  their grid distance;
- per layer, the phoneme-class ARI of NAP and of GradNAP clusterings, each against a null of
  shuffled class labels, and the ARI between the NAP and the GradNAP clusterings.

A weight of 0 keeps the loss's grids without its pull: it is the baseline, measured on the
same grids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.eval import checkpoint_datamodule
from tmaps.commands.introspect import checkpoint_profiles
from tmaps.introspect import Profiles, profile_matrix, resolve_grouping
from tmaps.introspect.clustering import cluster, grid_adjacency
from tmaps.studies.runs import RecordStore, composed_train_config, new_record, read_curve, relative_path, train_run, utterance_errors
from tmaps.topo import Grid, distance_profile, topography_metrics
from tmaps.training.module import ASRModule

log = logging.getLogger(__name__)


def run_id(loss: str, layers: Sequence[str], weight: float, seed: int) -> str:
    return f"{loss}-{'+'.join(layers)}-w{weight:g}-s{seed}"


def joint_morans_i(profiles: np.ndarray, grid: Grid, permutations: int, seed: int = 0) -> dict:
    """Mean Moran's I over the rows of ``profiles (groups, units)`` on ``grid``, and its permutation p.

    Each permutation places the units anew on the grid, the same placement for every group, so
    the p-value asks whether the layer's arrangement as a whole is smoother than chance. Rows
    that are constant are left out.
    """
    rows = profiles[np.ptp(profiles, axis=1) > 0]
    centred = rows - rows.mean(axis=1, keepdims=True)
    adjacency = grid_adjacency(grid.positions.numpy()).tocsr()
    scale = grid.n_units / adjacency.sum()

    def mean_i(values: np.ndarray) -> float:
        return float(np.mean(scale * np.einsum("gu,gu->g", values, (adjacency @ values.T).T) / np.einsum("gu,gu->g", values, values)))

    statistic = mean_i(centred)
    rng = np.random.default_rng(seed)
    null = np.array([mean_i(centred[:, rng.permutation(grid.n_units)]) for _ in range(permutations)])
    return {
        "morans_i": statistic,
        "morans_i_p": float((1 + np.count_nonzero(null >= statistic)) / (permutations + 1)),
        "morans_i_null_mean": float(null.mean()),
        "groups": int(len(rows)),
    }


def clustering_scores(nap: Profiles, gradnap: Profiles, layer: str, shuffles: int, seed: int = 0) -> dict:
    """Phoneme-class ARI of NAP and GradNAP clusterings, against shuffled class labels, and NAP-against-GradNAP ARI."""
    reference = resolve_grouping(nap.info["grouping"]).reference
    classes = np.array([reference(group) for group in nap.groups])
    n_clusters = len(set(classes))
    clusters = {kind: cluster(profile_matrix(profiles, layer), n_clusters) for kind, profiles in (("nap", nap), ("gradnap", gradnap))}
    rng = np.random.default_rng(seed)
    scores = {}
    for kind, labels in clusters.items():
        observed = adjusted_rand_score(classes, labels)
        null = np.array([adjusted_rand_score(rng.permutation(classes), labels) for _ in range(shuffles)])
        scores |= {
            f"ari_{kind}": float(observed),
            f"ari_{kind}_null_mean": float(null.mean()),
            f"ari_{kind}_null_q95": float(np.quantile(null, 0.95)),
            f"ari_{kind}_p": float((1 + np.count_nonzero(null >= observed)) / (shuffles + 1)),
        }
    scores["ari_nap_vs_gradnap"] = float(adjusted_rand_score(clusters["nap"], clusters["gradnap"]))
    return scores


def measure(checkpoint_path: Path, data: Mapping, analysis: Mapping) -> dict:
    """Everything the record holds about a trained model besides its curve (module docstring)."""
    checkpoint = load_checkpoint(checkpoint_path)
    conv_layers = [name for name in checkpoint.model.layer_names if name != "head"]
    grids = checkpoint.grids
    weights = topography_metrics(checkpoint.model, conv_layers, grids)
    layers = {layer: {key.split("/", 1)[1]: value for key, value in weights.items() if key.startswith(f"{layer}/")} for layer in conv_layers}

    module = ASRModule.from_checkpoint(checkpoint_path).eval()
    datamodule = checkpoint_datamodule(data, module.alphabet, module.hparams.features, checkpoint_path)
    datamodule.output_stride = module.model.stride
    datamodule.prepare_data()
    datamodule.setup("test")
    test = {split: utterance_errors(module, module.decode, loader) for split, loader in datamodule.test_loaders().items()}

    options = {"split": analysis["split"], "layers": conv_layers, "groups": "phoneme", "max_utterances": analysis.get("max_utterances")}
    nap = checkpoint_profiles(checkpoint, data, kind="nap", **options)
    gradnap = checkpoint_profiles(checkpoint, data, kind="gradnap", **options)
    for layer in conv_layers:
        layers[layer] |= clustering_scores(nap, gradnap, layer, analysis["shuffles"])
        if layer in grids:
            units = nap[layer].mean
            layers[layer] |= joint_morans_i(units, grids[layer], analysis["permutations"])
            distances, similarity, pairs = distance_profile(torch.as_tensor(np.ascontiguousarray(units.T)), grids[layer])
            layers[layer]["profile_similarity_by_distance"] = {
                "distance": [round(float(d), 4) for d in distances],
                "similarity": [float(s) for s in similarity],
                "pairs": [int(n) for n in pairs],
            }
    return {"test": test, "layers": layers, "topographic_layers": sorted(grids), "nap_utterances": nap.info["utterances"]}


def planned_runs(study: Mapping) -> list[dict]:
    """The settings of every run, seed-major so that an interrupted study has every setting at its first seeds."""
    runs = []
    for seed in study["seeds"]:
        for arm in study["arms"]:
            for weight in arm["weights"]:
                overrides = [*study["train_overrides"], f"topo={arm['loss']}", f"topo.layers=[{','.join(arm['layers'])}]", f"topo.weight={weight}"]
                overrides += [*arm.get("overrides", []), f"seed={seed}"]
                runs.append({
                    "run_id": run_id(arm["loss"], arm["layers"], weight, seed),
                    "settings": {"overrides": overrides, "seed": seed, "analysis": dict(study["analysis"])},
                    "arm": {"loss": arm["loss"], "layers": list(arm["layers"]), "weight": weight},
                })
    return runs


def run(study: Mapping) -> list[dict]:
    """Train and measure every planned run that has no record yet; return all records of the study."""
    store = RecordStore(study["records_dir"])
    out_dir = Path(study["out_dir"])
    for planned in planned_runs(study):
        if store.load(planned["run_id"], planned["settings"]) is not None:
            continue
        run_dir = out_dir / planned["run_id"]
        overrides = [*planned["settings"]["overrides"], f"hydra.run.dir={run_dir}"]
        log.info("training %s", planned["run_id"])
        wall = train_run(overrides, run_dir / "console.log")
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1]
        record = new_record(study["name"], planned["run_id"], planned["settings"])
        record |= {"arm": planned["arm"], "checkpoint": relative_path(best, out_dir)}
        record["provenance"]["wall_seconds"] = wall
        record["curve"] = read_curve(run_dir / "csv" / "version_0" / "metrics.csv")
        data = _composed_data(planned["settings"]["overrides"])
        record |= measure(best, data, study["analysis"])
        store.save(record)
        log.info("%s: test CER %.4f", planned["run_id"], record["test"]["test"]["cer"])
    return store.records()


def _composed_data(overrides: Sequence[str]) -> dict:
    from omegaconf import OmegaConf

    cfg = composed_train_config([o for o in overrides if not o.startswith("hydra.")])
    return OmegaConf.to_container(cfg.data, resolve=True)

