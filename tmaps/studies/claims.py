"""The claims file: one entry per finding of the four papers, judged on the test split by a criterion fixed before the runs.

``docs/results/claims.json`` is ``{"claims": [...]}``, one entry per :data:`CLAIMS` in their
order, each with exactly the fields :data:`FIELDS`; ``docs/results/claims.md`` is the same as a
Markdown table (:func:`claims_table`), which :func:`replace_marked_section` also puts into the
README between ``<!-- claims:start -->`` and ``<!-- claims:end -->``.

A study's report measures the claims it owns and passes a :class:`Measurement` for each (or
``None`` for one it cannot measure yet) to :func:`update_claims`, which judges them
(:func:`judge`) and rewrites both files, keeping every other study's entries as they are. The
criterion's text is part of an entry: an entry judged by another wording of its criterion is
not kept, it becomes ``not measured``.

A claim within noise never ``holds``: the headline interval must lie wholly beyond the
criterion's threshold, the test's p (where the criterion has one) must be below its level, and
the criterion's number of seeds (:data:`MIN_SEEDS` unless it asks for more) must back it.
Otherwise it ``fails``, or is ``not measured`` when there are too few seeds to tell.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tmaps.studies.runs import REPO_ROOT, relative_path, write_text_atomically

RESULTS_DIR = REPO_ROOT / "docs" / "results"
README = REPO_ROOT / "README.md"
FIELDS = ("id", "paper", "criterion", "status", "estimate", "ci95", "n_seeds", "p", "records")
STATUSES = ("holds", "fails", "not measured")
MIN_SEEDS = 3
SIGNIFICANT_DIGITS = 6
CLAIMS_MD_HEADER = (
    "# Claims\n\nThe four papers' findings, each judged on the test split by a criterion fixed before the runs. "
    "Written with `claims.json` by the studies' reports (`tmaps.studies.claims`); do not edit by hand."
)


@dataclass(frozen=True)
class ClaimSpec:
    """A claim and its criterion: the headline interval must lie wholly ``holds_when`` (``above``/``below``) ``threshold``,
    where the criterion has a test (``alpha``) its p must be below ``alpha``, and ``min_seeds`` seeds must back it."""

    id: str
    paper: str
    criterion: str
    threshold: float
    holds_when: str
    alpha: float | None = None
    min_seeds: int = MIN_SEEDS


@dataclass(frozen=True)
class Measurement:
    """What a study's report measured for one claim.

    ``conditions_met`` is the study's verdict on the criterion's parts besides the headline
    interval and p (for example "in every seed"); it can stop a claim from holding, never make
    one hold. ``records`` are the record files the numbers rest on (made relative to the
    repository).
    """

    estimate: float
    ci95: tuple[float, float]
    n_seeds: int
    records: Sequence[str | Path]
    p: float | None = None
    conditions_met: bool = True


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "topo_groups_phonemes",
        "Topographic filter maps group phoneme-responsive units: on a layer trained with a topographic loss, "
        "units that respond to the same phonemes lie next to each other.",
        "Test split, at the topo weight chosen on dev: the lower end of the 95% CI over seeds of the mean Moran's I "
        "of the phoneme NAP maps of the topographic layers is above 0.5, above the upper end of the weight-0 "
        "baseline's CI on the same grids and above the upper end of a collapse control's CI (the layer reduced to "
        "the same participation ratio without topography); the Moran's I permutation p is below 0.01 in every seed "
        "(p: the largest over seeds); and the participation ratio of each topographic layer is at least 50% of the "
        "untouched layers' in every seed.",
        threshold=0.5,
        holds_when="above",
        alpha=0.01,
    ),
    ClaimSpec(
        "gradnap_clusters_groups",
        "GradNAPs cluster groups of inputs meaningfully: clustering the gradient-based activation profiles of "
        "phonemes recovers their phonetic classes.",
        "Test split: in every seed, the phoneme-class ARI of the GradNAP clustering is above the 95th percentile "
        "of its shuffled-label null on the majority of conv layers; and the lower end of the 95% CI over seeds of "
        "the ARI (mean over conv layers) is above 0.",
        threshold=0.0,
        holds_when="above",
    ),
    ClaimSpec(
        "transfer_fewer_steps",
        "A model pretrained on English and fine-tuned on German reaches the CER of a German model trained from "
        "scratch in at most a fifth of the training steps.",
        "Test split, all German training data, every run trained to early stopping on dev under one schedule: per "
        "seed, the steps ratio of the best transfer recipe (chosen on dev) = its steps to scratch's converged test "
        "CER (the mean over seeds of scratch's test CER at its best-dev checkpoint) over scratch's steps to it, each "
        "crossing interpolated between evaluations of the kept checkpoints on test; the upper end of the ratio's "
        "95% CI over seeds is below 0.2.",
        threshold=0.2,
        holds_when="below",
    ),
    ClaimSpec(
        "transfer_less_data",
        "With transfer from English, a tenth of the German training data suffices to reach the CER that "
        "training from scratch reaches with all of it.",
        "Test split, every run trained to early stopping on dev under one schedule and the same regularization: "
        "test CER of the best transfer recipe on 10% of the German data (chosen on dev) minus that of scratch on "
        "100%, paired by seed and test utterance; the upper end of its 95% CI (bootstrap over seeds, then "
        "utterances within each) is below 0.01 (a non-inferiority margin of one CER point).",
        threshold=0.01,
        holds_when="below",
    ),
    ClaimSpec(
        "transfer_inner_layers_least",
        "Fine-tuning a transferred model changes its inner layers least: the relative weight change is smallest "
        "in the middle layers and grows towards the input and the output.",
        "Fine-tuning every layer on all German training data to early stopping (weights, no split): per seed, the "
        "mean relative weight change ‖W − W₀‖ / ‖W₀‖ of the middle third of the conv layers minus that of the first "
        "conv layer, the last conv layer and the head; the upper end of its 95% CI over seeds is below 0.",
        threshold=0.0,
        holds_when="below",
    ),
    ClaimSpec(
        "maps_expose_errors",
        "Topographic activation maps expose a model's errors: the maps of the frames of a phoneme the model gets "
        "wrong differ from the maps of its frames it gets right.",
        "Test split, a topographic model (the bias study's balanced arm: the quickstart recipe), at least 5 seeds: "
        "per seed and conv layer (every layer but the output head), for every character with at least 20 wrongly and "
        "20 correctly recognised frames there (characters forced-aligned to the model, wrong when greedy decoding "
        "emits another character or none on their frames), the separation of its wrong-frame and correct-frame maps "
        "(the root-mean-square distance between the two maps taken from disjoint random halves of the utterances over "
        "that between the two halves of one group, about 1 when they do not differ), averaged over those characters "
        "and then over the conv layers; the lower end of its 95% CI over seeds is above 1.",
        threshold=1.0,
        holds_when="above",
        min_seeds=5,
    ),
    ClaimSpec(
        "maps_expose_bias",
        "Topographic activation maps expose a model's biases: a model trained on data that under-represents a "
        "group of speakers shows it in the maps of its inner layers.",
        "Test split, the data-set bias design at its strongest (one gender under-represented in training) against "
        "a balanced model, at least 5 seeds per arm: per seed, the distance between the two genders' maps over its "
        "split-half null, averaged over the conv layers (every layer but the output head); biased minus balanced: "
        "the lower end of its 95% CI over seeds is above 0 and the one-sided exact permutation p (biased against "
        "balanced seeds) is below 0.01, which 5 against 5 can reach (1/252) and 4 against 4 cannot (1/70).",
        threshold=0.0,
        holds_when="above",
        alpha=0.01,
        min_seeds=5,
    ),
)
SPECS = {spec.id: spec for spec in CLAIMS}


def judge(spec: ClaimSpec, measurement: Measurement | None) -> dict:
    """The claims-file entry of ``spec`` given what was measured (``None``: not measured yet).

    Raises:
        ValueError: the interval does not contain the estimate, or the criterion has a test and no p was given.
    """
    entry = {"id": spec.id, "paper": spec.paper, "criterion": spec.criterion, "status": "not measured"}
    if measurement is None:
        return entry | {"estimate": None, "ci95": None, "n_seeds": 0, "p": None, "records": []}
    # Judged on the numbers as the file shows them, so that judging the file again gives the same status.
    estimate, low, high = (_rounded(value) for value in (measurement.estimate, *measurement.ci95))
    p = None if measurement.p is None else _rounded(measurement.p)
    if not low <= estimate <= high:
        raise ValueError(f"claim {spec.id}: the 95% CI [{low}, {high}] does not contain the estimate {estimate}")
    if spec.alpha is not None and p is None:
        raise ValueError(f"claim {spec.id}: its criterion has a test (p < {spec.alpha}); the measurement gives no p")
    if measurement.n_seeds >= spec.min_seeds and all(map(math.isfinite, (low, high))):
        beyond = low > spec.threshold if spec.holds_when == "above" else high < spec.threshold
        significant = spec.alpha is None or p < spec.alpha
        entry["status"] = "holds" if beyond and significant and measurement.conditions_met else "fails"
    records = sorted(_repository_path(path, spec.id) for path in measurement.records)
    return entry | {"estimate": estimate, "ci95": [low, high], "n_seeds": int(measurement.n_seeds), "p": p, "records": records}


def update_claims(
    measurements: Mapping[str, Measurement | None], results_dir: str | Path = RESULTS_DIR, markdown_files: Sequence[str | Path] = ()
) -> list[dict]:
    """Judge ``measurements`` (claim id -> measurement, ``None`` for not measured) and rewrite ``claims.json`` and ``claims.md``.

    ``markdown_files`` (the README: :data:`README`) get the same table between their claims
    markers (:func:`replace_marked_section`).

    Claims missing from ``measurements`` keep the numbers of their entry in the existing file,
    judged again, if it was judged by today's criterion; else they become ``not measured``.
    Returns the entries, in :data:`CLAIMS` order.

    Raises:
        ValueError: an unknown claim id, or an existing claims file that is not valid JSON (its path is named; nothing is
            written); a Markdown file without the claims markers (after the claims files are written).
    """
    unknown = sorted(set(measurements) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown claim ids {unknown}; known: {list(SPECS)}")
    results_dir = Path(results_dir)
    kept = {entry["id"]: entry for entry in read_claims(results_dir / "claims.json") if entry.get("id") in SPECS}
    claims = []
    for spec in CLAIMS:
        if spec.id in measurements:
            claims.append(judge(spec, measurements[spec.id]))
        elif spec.id in kept and kept[spec.id].get("criterion") == spec.criterion:
            claims.append(judge(spec, _as_measurement(kept[spec.id])))
        else:
            claims.append(judge(spec, None))
    write_text_atomically(results_dir / "claims.json", json.dumps({"claims": claims}, indent=1, ensure_ascii=False) + "\n")
    table = claims_table(claims)
    write_text_atomically(results_dir / "claims.md", f"{CLAIMS_MD_HEADER}\n\n{table}\n")
    for markdown_file in markdown_files:
        replace_marked_section(markdown_file, claims_table(claims, criteria=False))
    return claims


def read_claims(path: str | Path) -> list[dict]:
    """The entries of a claims file; none when the file does not exist.

    Raises:
        ValueError: the file is not valid JSON or has no ``claims`` list (the path is named).
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        claims = json.loads(path.read_text(encoding="utf-8"))["claims"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"claims file {path} is not {{\"claims\": [...]}} JSON ({error!r}); fix or delete it") from error
    if not isinstance(claims, list):
        raise ValueError(f"claims file {path}: 'claims' is not a list")
    return claims


def claims_table(claims: Sequence[Mapping], criteria: bool = True) -> str:
    """The claims as a Markdown table: claim, paper, criterion, status, estimate with its 95% CI, seeds, p and the record folders.

    ``criteria=False`` leaves out the criterion and the record folders: the README's short table, which points to ``claims.md``.
    """
    columns = ["claim", "paper", "criterion", "status", "estimate [95% CI]", "seeds", "p", "records"]
    if not criteria:
        columns = [column for column in columns if column not in ("criterion", "records")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for claim in claims:
        estimate = "-" if claim["estimate"] is None else _number(claim["estimate"])
        if claim["ci95"] is not None:
            estimate += f" [{_number(claim['ci95'][0])}, {_number(claim['ci95'][1])}]"
        cells = {
            "claim": f"`{claim['id']}`",
            "paper": _cell(claim["paper"]),
            "criterion": _cell(claim["criterion"]),
            "status": f"**{claim['status']}**",
            "estimate [95% CI]": estimate,
            "seeds": str(claim["n_seeds"]),
            "p": "-" if claim["p"] is None else _number(claim["p"]),
            "records": _record_folders(claim["records"]),
        }
        lines.append("| " + " | ".join(cells[column] for column in columns) + " |")
    return "\n".join(lines)


def replace_marked_section(markdown_path: str | Path, text: str, name: str = "claims") -> bool:
    """Replace what lies between ``<!-- <name>:start -->`` and ``<!-- <name>:end -->`` in a Markdown file with ``text``.

    Returns whether the file changed.

    Raises:
        ValueError: the file lacks either marker, has one twice, or has them in the wrong order (file and marker named).
    """
    markdown_path = Path(markdown_path)
    content = markdown_path.read_text(encoding="utf-8")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    for marker in (start, end):
        if content.count(marker) != 1:
            raise ValueError(f"{markdown_path} must hold the marker {marker} exactly once, found {content.count(marker)}")
    head, rest = content.split(start)
    if end not in rest:
        raise ValueError(f"{markdown_path}: {end} comes before {start}")
    tail = rest.split(end)[1]
    updated = f"{head}{start}\n{text.strip()}\n{end}{tail}"
    if updated == content:
        return False
    write_text_atomically(markdown_path, updated)
    return True


def _as_measurement(entry: Mapping) -> Measurement | None:
    """A kept entry as the measurement it was judged from, so that it is judged again: a hand-edited ``holds`` cannot survive."""
    if entry.get("estimate") is None or entry.get("ci95") is None:
        return None
    return Measurement(entry["estimate"], tuple(entry["ci95"]), entry["n_seeds"], entry["records"], entry["p"], conditions_met=entry["status"] == "holds")


def _repository_path(path: str | Path, claim: str) -> str:
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    if not path.resolve().is_relative_to(REPO_ROOT):
        raise ValueError(f"claim {claim}: record {path.name} lies outside the repository; claims rest on committed records only")
    return relative_path(path)


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _number(value: float) -> str:
    return f"{value:.3g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _record_folders(records: Sequence[str]) -> str:
    """Record files grouped by folder (``docs/results/transfer/runs/ (12)``): a claim may rest on many runs."""
    folders = Counter(Path(record).parent.as_posix() for record in records)
    return "<br>".join(f"`{folder}/` ({count})" for folder, count in sorted(folders.items())) or "-"
