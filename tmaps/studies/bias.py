"""The bias study: do maps reveal a bias inside the network, and with fewer test utterances than the error rate does?

Every arm trains the same recipe (``conf/study/bias.yaml``, the quickstart's) on the same number
of utterances drawn from one synthetic base corpus; only the choice or labelling of those
utterances differs (:func:`arm_train_records`):

- ``balanced``: a random subset, the control of every design;
- ``group_share``: one group of a record field (female voices) at a fixed share of the
  training utterances (0% and 10%): a data-set bias;
- ``spurious_cue``: an utterance is kept only when it holds a word of a class (words
  beginning with given letters) exactly when it is in one acoustic condition (brown noise), so
  that in training the condition always comes with the word class; test stays mixed;
- ``relabel``: the balanced subset with one character written as another (``s`` as ``z``): the
  planted label bias, kept as the output-layer control.

A design names its arms, the control and its two groups of test frames: a record field's value
against the rest (``{field, value}``, utterance-level) or two characters (``{characters}``,
frame-level). On every trained model the record holds, per design and layer, the
:func:`~tmaps.introspect.bias.separation` of the two groups' maps on the test split (how far
apart beyond a split-half null), its frame counts, and the same on random subsamples of the test
utterances (``analysis.subsample``: the same subsets in every run); and per utterance its group,
so that the report computes the error rate's gap between the groups from the record alone. The
runs of ``analysis.errors.arm`` (the balanced arm) also hold, per layer and character, the
separation of its wrongly against its correctly recognised frames (:func:`error_measures`), which
``maps_expose_errors`` is judged on.

The report compares each arm with the control over seeds, per layer and for the mean over the
conv layers: the difference of means with its 95% CI over seeds, the exact two-sided
permutation p (5 against 5 seeds reaches 1/126), Cohen's d, and the smallest number of test
utterances at which the median p over subsamples falls below 0.01; the same for the error rate
(the CER gap between the groups, or the test CER where the groups are frame-level).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tmaps.checkpoint import LoadedCheckpoint, load_checkpoint
from tmaps.data import checkpoint_datamodule
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.data.synth import synthesize_corpus
from tmaps.introspect import NAP, CharacterGrouping, RecordGrouping
from tmaps.introspect.bias import GroupSums, PerUtterance, separation
from tmaps.introspect.error_analysis import CORRECT, WRONG, collect_outcomes, outcome_groupings
from tmaps.introspect.groups import Grouping
from tmaps.studies import claims, stats
from tmaps.studies.profiles import checkpoint_profiles
from tmaps.studies.runs import (
    RecordStore,
    checkpoint_test_errors,
    locked,
    relative_path,
    trained_record,
)

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl", "test_unseen": "test_unseen.jsonl"}
ALPHA = 0.01
ARM_KINDS = ("group_share", "spurious_cue", "relabel")


def run_id(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def _sample(records: Sequence[dict], n: int, rng: np.random.Generator, what: str) -> list[dict]:
    if len(records) < n:
        raise ValueError(
            f"{what}: {len(records)} train utterances of the base corpus qualify, {n} are asked for; raise corpus.n_utterances.train or lower train_utterances"
        )
    return [records[index] for index in sorted(rng.choice(len(records), n, replace=False))]


def has_class_word(record: Mapping, first_letters: Sequence[str]) -> bool:
    """Whether the transcript holds a word of the class: a word beginning with one of ``first_letters``."""
    return any(word[0] in first_letters for word in record["text"].split())


def arm_train_records(records: Sequence[dict], name: str, arm: Mapping, n: int, seed: int = 0) -> list[dict]:
    """The ``n`` training utterances of an arm (module docstring), drawn from the base corpus' ``records`` by ``seed``.

    Raises:
        ValueError: an unknown arm kind, or too few qualifying utterances (the arm and the counts are named).
    """
    unknown = sorted(set(arm) - set(ARM_KINDS))
    if unknown or len(arm) > 1:
        raise ValueError(f"arm {name!r}: give at most one of {list(ARM_KINDS)} (none: a random subset), got {sorted(arm)}")
    rng = np.random.default_rng(seed)
    if "group_share" in arm:
        spec = arm["group_share"]
        in_group = [record for record in records if record.get(spec["field"]) == spec["value"]]
        rest = [record for record in records if record.get(spec["field"]) != spec["value"]]
        k = round(spec["share"] * n)
        chosen = _sample(in_group, k, rng, f"arm {name!r} ({spec['field']}={spec['value']})") + _sample(rest, n - k, rng, f"arm {name!r} (the rest)")
        return sorted(chosen, key=lambda record: record["id"])
    if "spurious_cue" in arm:
        spec = arm["spurious_cue"]
        qualifying = [record for record in records if has_class_word(record, spec["first_letters"]) == (record.get(spec["field"]) == spec["value"])]
        return _sample(qualifying, n, rng, f"arm {name!r} (word class with {spec['field']}={spec['value']} only)")
    chosen = _sample(list(records), n, rng, f"arm {name!r}")
    if "relabel" in arm:
        source, target = arm["relabel"]["source"], arm["relabel"]["target"]
        chosen = [{**record, "text": record["text"].replace(source, target)} for record in chosen]
    return chosen


def write_arm_corpus(base: Path, folder: Path, name: str, arm: Mapping, n: int) -> Path:
    """A folder of manifests: the arm's train split (:func:`arm_train_records`) and the base corpus' other splits as they are."""
    for split, file in SPLIT_FILES.items():
        records = read_manifest(base / file)
        write_manifest(arm_train_records(records, name, arm, n) if split == "train" else records, folder / file)
    return folder


def design_grouping(groups: Mapping) -> tuple[Grouping, list[str]]:
    """The grouping of a design's test frames and its two groups: ``{field, value}`` (the value against the rest) or ``{characters: [a, b]}``.

    Raises:
        ValueError: neither form, or not two characters.
    """
    if "characters" in groups:
        characters = list(groups["characters"])
        if len(characters) != 2:
            raise ValueError(f"a design compares two characters, got {characters}")
        return CharacterGrouping(label=lambda char: char if char in characters else None, labels=characters), characters
    if "field" in groups and "value" in groups:
        field, value = groups["field"], groups["value"]
        other = f"not {value}"

        def label(record: Mapping) -> str:
            if field not in record:
                raise ValueError(f"record {record.get('id')!r} has no field {field!r}; its fields are {sorted(record)}")
            return str(value) if record[field] == value else other

        return RecordGrouping(label=label, labels=[str(value), other], name=field), [str(value), other]
    raise ValueError(f"a design's groups are {{field, value}} or {{characters: [a, b]}}, got {dict(groups)}")


def subsample(ids: Sequence[str], n: int, draw: int) -> list[str]:
    """``n`` of the utterance ids, the same for a given ``(n, draw)`` in every run and in the report."""
    ordered = sorted(ids)
    return [ordered[index] for index in sorted(np.random.default_rng([n, draw]).choice(len(ordered), n, replace=False))]


def design_measures(sums: GroupSums, ids: Sequence[str], analysis: Mapping) -> dict:
    """Per layer: the separation of the two groups on all test utterances, frames per group, and on each subsample."""
    layers = {}
    for layer in sums.layers:
        table = sums.table(layer)
        full = separation(table, sums.members(layer), analysis["splits"])
        curve = {}
        for n in analysis["subsample"]["sizes"]:
            if n < len(ids):
                draws = [sums.members(layer, sums.utterance_indices(subsample(ids, n, draw))) for draw in range(analysis["subsample"]["draws"])]
                curve[str(n)] = [separation(table, members, analysis["splits"]).ratio for members in draws]
        layers[layer] = {"ratio": full.ratio, "between": full.between, "within": full.within, "frames": sums.frames(layer), "subsample": curve}
    groups = None
    if sums.utterance_level:
        counts = next(iter(sums.counts.values()))
        groups = {utterance: sums.groups[int(np.argmax(counts[:, index]))] for index, utterance in enumerate(sums.utterances) if counts[:, index].any()}
    return {"groups": list(sums.groups), "layers": layers, "utterance_groups": groups}


def error_measures(checkpoint: LoadedCheckpoint, data: Mapping, analysis: Mapping) -> dict:
    """Per layer and character with at least ``analysis.errors.min_frames`` wrongly and correctly recognised test frames there:
    the separation of its wrong-frame and correct-frame maps, and their frames (``maps_expose_errors``).

    Characters are forced-aligned to the model and marked correct or wrong by what greedy decoding
    emits on their frames (:mod:`tmaps.introspect.error_analysis`).
    """
    datamodule = checkpoint_datamodule(data, checkpoint.alphabet, checkpoint.features, checkpoint.path)
    datamodule.prepare_data()
    loader = datamodule.loader("test", shuffle=False)
    outcomes, _ = outcome_groupings(collect_outcomes(checkpoint.model, loader, checkpoint.alphabet))
    layers = list(checkpoint.model.layer_names)
    sums = GroupSums.from_profiles(NAP(checkpoint.model, layers).compute(loader, PerUtterance(outcomes), normalize=None))
    characters = sorted({group.rpartition(":")[0] for group in sums.groups})
    measured = {}
    for layer in layers:
        measured[layer] = {}
        for character in characters:
            pair = [f"{character}:{WRONG}", f"{character}:{CORRECT}"]
            if not set(pair) <= set(sums.groups):
                continue
            chosen = sums.select(pair)
            frames = chosen.frames(layer)
            if min(frames.values()) >= analysis["errors"]["min_frames"]:
                ratio = separation(chosen.table(layer), chosen.members(layer), analysis["splits"]).ratio
                measured[layer][character] = {"ratio": ratio, "frames": frames}
    return {"layers": measured}


def measure(checkpoint_path: Path, data: Mapping, designs: Sequence[Mapping], analysis: Mapping, errors: bool = False) -> dict:
    """The record's ``test`` errors and, per design, :func:`design_measures` on the test split; with ``errors``, :func:`error_measures`."""
    test = checkpoint_test_errors(checkpoint_path, data)
    ids = [row["id"] for row in test["test"]["utterances"]]
    checkpoint = load_checkpoint(checkpoint_path)
    metrics = {}
    for design in designs:
        grouping, groups = design_grouping(design["groups"])
        profiles = checkpoint_profiles(checkpoint, data, split="test", layers=list(checkpoint.model.layer_names), groups=PerUtterance(grouping), normalize=None)
        metrics[design["name"]] = design_measures(GroupSums.from_profiles(profiles).select(groups), ids, analysis)
    result = {"test": test, "metrics": metrics}
    if errors:
        result["errors"] = error_measures(checkpoint, data, analysis)
    return result


def planned_runs(study: Mapping) -> list[dict]:
    """Every run's settings, seed-major: an interrupted study has every arm at its first seeds."""
    runs = []
    for seed in study["seeds"]:
        for arm, spec in study["arms"].items():
            designs = [design for design in study["designs"] if arm == design["control"] or arm in design["arms"]]
            settings = {
                "overrides": [*study["train_overrides"], f"seed={seed}"],
                "seed": seed,
                "arm": {arm: dict(spec)},
                "corpus": dict(study["corpus"]),
                "train_utterances": study["train_utterances"],
                "designs": [dict(design["groups"]) | {"name": design["name"]} for design in designs],
                "analysis": dict(study["analysis"]),
                "errors": arm == study["analysis"]["errors"]["arm"],
            }
            runs.append({"run_id": run_id(arm, seed), "arm": arm, "settings": settings, "designs": designs})
    return runs


def manifest_source(folder: Path) -> list[str]:
    """The overrides that replace the recipe's corpus with a folder of manifests."""
    splits = ",".join(f"{split}:{file}" for split, file in SPLIT_FILES.items())
    return ["~data.source", f"+data.source={{kind:manifest,path:'{folder.resolve()}',splits:{{{splits}}}}}"]


def run(study: Mapping) -> list[dict]:
    """Synthesize the base corpus, write each arm's manifests, train and measure every planned run without a record; return all records."""
    store = RecordStore(study["records_dir"])
    out_dir = Path(study["out_dir"])
    pending = [planned for planned in planned_runs(study) if store.load(planned["run_id"], planned["settings"]) is None]
    if pending:
        base = synthesize_corpus(study["corpus"], out_dir / "data", num_workers=study.get("num_workers", 1))
    for planned in pending:
        arm = planned["arm"]
        corpus = write_arm_corpus(base, out_dir / "corpora" / arm, arm, study["arms"][arm], study["train_utterances"])
        run_dir = out_dir / planned["run_id"]
        with locked(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # no record: whatever the folder holds is an unfinished run
            log.info("training %s", planned["run_id"])
            overrides = [*planned["settings"]["overrides"], *manifest_source(corpus)]
            record, best, config = trained_record(study["name"], planned, overrides, run_dir, out_dir)
            record |= measure(best, config["data"], planned["designs"], study["analysis"], errors=planned["settings"]["errors"])
            store.save(record)
        log.info("%s: test CER %.4f", planned["run_id"], record["test"]["test"]["cer"])
    return store.records()


def conv_layers(record: Mapping, design: str) -> list[str]:
    return [layer for layer in record["metrics"][design]["layers"] if layer != "head"]


def map_statistic(record: Mapping, design: str, layer: str, n: int | None = None, draw: int = 0) -> float:
    """The separation of a record at ``layer`` (``"conv mean"``: the mean over conv layers), on all test utterances or subsample ``(n, draw)``."""
    layers = record["metrics"][design]["layers"]
    names = conv_layers(record, design) if layer == "conv mean" else [layer]
    if n is None:
        return float(np.mean([layers[name]["ratio"] for name in names]))
    return float(np.mean([layers[name]["subsample"][str(n)][draw] for name in names]))


def error_statistic(record: Mapping, design: str, ids: Sequence[str] | None = None) -> float:
    """The CER of the design's first group minus that of the other (utterance-level groups), else the test CER; on ``ids`` only when given."""
    rows = record["test"]["test"]["utterances"]
    if ids is not None:
        wanted = set(ids)
        rows = [row for row in rows if row["id"] in wanted]
    groups = record["metrics"][design]["utterance_groups"]
    if groups is None:
        return float(stats.pooled_rate(stats.error_counts(rows)))
    first, other = record["metrics"][design]["groups"]
    rates = [stats.pooled_rate(stats.error_counts([row for row in rows if groups.get(row["id"]) == group])) for group in (first, other)]
    return float(rates[0] - rates[1])


def compare(arm_values: Sequence[float], control_values: Sequence[float]) -> dict:
    """Arm against control over seeds: means, difference [95% CI], two-sided exact permutation p, Cohen's d."""
    difference = stats.difference_ci(arm_values, control_values)
    return {
        "arm_mean": float(np.mean(arm_values)), "control_mean": float(np.mean(control_values)),
        "difference": difference.estimate, "low": difference.low, "high": difference.high,
        "p": stats.permutation_p(arm_values, control_values, alternative="two-sided"), "d": stats.cohens_d(arm_values, control_values),
    }  # fmt: skip


def utterances_needed(arm: Sequence[Mapping], control: Sequence[Mapping], statistic, sizes: Sequence[int], draws: int, n_test: int) -> float:
    """The fewest test utterances (of ``sizes`` and all ``n_test``) at which the median p over subsamples is below :data:`ALPHA`; inf if none."""

    def p_value(n: int | None, draw: int) -> float:
        return stats.permutation_p([statistic(r, n, draw) for r in arm], [statistic(r, n, draw) for r in control], alternative="two-sided")

    for n in sorted(size for size in sizes if size < n_test):
        if np.median([p_value(n, draw) for draw in range(draws)]) < ALPHA:
            return float(n)
    full = p_value(None, 0)
    return float(n_test) if full < ALPHA else math.inf


def comparison_table(records: Sequence[Mapping], study: Mapping) -> pd.DataFrame:
    """One row per design, arm, layer (and the conv mean) and statistic (map separation, error rate); arms with fewer than 2 seeds are left out."""
    by_arm: dict[str, list[Mapping]] = {}
    for record in records:
        by_arm.setdefault(record["arm"], []).append(record)
    rows = []
    for design in study["designs"]:
        control = by_arm.get(design["control"], [])
        for arm in design["arms"]:
            runs = by_arm.get(arm, [])
            if min(len(runs), len(control)) >= 2:
                base = {"design": design["name"], "arm": arm, "control": design["control"], "seeds": f"{len(runs)} / {len(control)}"}
                rows += [base | row for row in arm_rows(design["name"], runs, control, study["analysis"]["subsample"])]
    return pd.DataFrame(rows)


def arm_rows(design: str, runs: Sequence[Mapping], control: Sequence[Mapping], subsampling: Mapping) -> list[dict]:
    """:func:`comparison_table`'s rows of one arm against its control."""
    ids = [row["id"] for row in runs[0]["test"]["test"]["utterances"]]
    sizes, draws = subsampling["sizes"], subsampling["draws"]
    rows = []
    for layer in [*conv_layers(runs[0], design), "head", "conv mean"]:

        def maps(record: Mapping, n: int | None, draw: int, layer: str = layer) -> float:
            return map_statistic(record, design, layer, n, draw)

        needed = utterances_needed(runs, control, maps, sizes, draws, len(ids))
        rows.append(
            {"layer": layer, "statistic": "map separation"}
            | compare([maps(r, None, 0) for r in runs], [maps(r, None, 0) for r in control])
            | {"utterances_to_p01": needed}
        )

    def errors(record: Mapping, n: int | None, draw: int) -> float:
        return error_statistic(record, design, None if n is None else subsample(ids, n, draw))

    values = compare([errors(r, None, 0) for r in runs], [errors(r, None, 0) for r in control])
    label = "CER gap" if runs[0]["metrics"][design]["utterance_groups"] is not None else "test CER"
    rows.append({"layer": "output", "statistic": label} | values | {"utterances_to_p01": utterances_needed(runs, control, errors, sizes, draws, len(ids))})
    return rows


def error_statistic_of_maps(record: Mapping) -> float:
    """``maps_expose_errors``' per-seed number: the wrong-against-correct separation, averaged over characters, then over the conv layers."""
    layers = [layer for layer in record["errors"]["layers"] if layer != "head"]
    per_layer = [np.mean([entry["ratio"] for entry in record["errors"]["layers"][layer].values()]) for layer in layers if record["errors"]["layers"][layer]]
    return float(np.mean(per_layer)) if per_layer else math.nan


def claim_measurements(records: Sequence[Mapping], study: Mapping, record_paths: Mapping[str, str]) -> dict:
    """``maps_expose_bias`` from the design and arm the config names for it (``claim``), ``maps_expose_errors`` from the runs with error maps."""
    measurements: dict[str, claims.Measurement | None] = {"maps_expose_errors": None, "maps_expose_bias": None}
    design = next(design for design in study["designs"] if design.get("claim"))
    arm = [r for r in records if r["arm"] == design["claim"]]
    control = [r for r in records if r["arm"] == design["control"]]
    if min(len(arm), len(control)) >= 2:
        arm_values = [map_statistic(r, design["name"], "conv mean") for r in arm]
        control_values = [map_statistic(r, design["name"], "conv mean") for r in control]
        difference = stats.difference_ci(arm_values, control_values)
        measurements["maps_expose_bias"] = claims.Measurement(
            difference.estimate,
            (difference.low, difference.high),
            min(len(arm), len(control)),
            [record_paths[r["run_id"]] for r in [*arm, *control]],
            p=stats.permutation_p(arm_values, control_values, alternative="greater"),
        )
    with_errors = [r for r in records if "errors" in r]
    values = [error_statistic_of_maps(r) for r in with_errors]
    measured = [value for value in values if math.isfinite(value)]
    if len(measured) >= 2:
        interval = stats.seed_ci(measured)
        measurements["maps_expose_errors"] = claims.Measurement(
            interval.estimate,
            (interval.low, interval.high),
            len(measured),
            [record_paths[r["run_id"]] for r in with_errors],
            conditions_met=len(measured) == len(values),  # a seed without a character to measure cannot back the claim
        )
    return measurements


def markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "No design has 2 seeds of its arm and of its control yet: not yet run."
    cells = table[["design", "arm", "seeds", "layer", "statistic"]].copy()
    cells["arm − control [95% CI]"] = [f"{row.difference:.3g} [{row.low:.3g}, {row.high:.3g}]" for row in table.itertuples()]
    cells["arm / control"] = [f"{row.arm_mean:.3g} / {row.control_mean:.3g}" for row in table.itertuples()]
    cells["p (two-sided)"] = [f"{p:.3g}" for p in table["p"]]
    cells["Cohen's d"] = [f"{d:.3g}" for d in table["d"]]
    cells["utterances to p < 0.01"] = ["never" if math.isinf(n) else f"{n:g}" for n in table["utterances_to_p01"]]
    return cells.to_markdown(index=False)


def report(study: Mapping, claims_dir: str | Path = claims.RESULTS_DIR, readme: str | Path = claims.README) -> dict:
    """The comparison table (CSV, Markdown, the results page's section) and the claims, from the committed records alone."""
    store = RecordStore(study["records_dir"])
    records = store.records()
    table = comparison_table(records, study) if records else pd.DataFrame()
    results_dir = store.folder.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / "bias_table.csv", index=False, float_format="%.6g")
    summary = (
        f"{markdown_table(table)}\n\n{len(records)} runs. Map separation: the distance between the two groups' maps over the distance "
        "between two halves of one group's data (about 1 when they do not differ). arm − control: difference of the means over seeds, "
        "95% CI by bootstrap over seeds; p: exact permutation test over seeds; utterances to p < 0.01: the fewest test utterances at "
        "which the median p over random subsamples is below 0.01.\n"
    )
    (results_dir / "bias_table.md").write_text(summary, encoding="utf-8")
    claims.replace_marked_section(study["results_page"], summary, name="bias-study")
    record_paths = {record["run_id"]: relative_path(store.path(record["run_id"])) for record in records}
    judged = claims.update_claims(claim_measurements(records, study, record_paths), claims_dir, markdown_files=[readme])
    return {"table": table, "claims": judged}
