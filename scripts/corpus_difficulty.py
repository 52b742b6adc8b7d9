"""Which realism option makes the hard synthetic corpus hard: a trained model's CER per utterance
against the utterance's babble SNR, noise SNR, reverberation time, speed, rate, pitch and voice.

Every synthetic manifest record carries the realism draws of its utterance (``babble_snr_db``,
``snr_db``, ``rt60_s``, ``speed``, ...). A trained checkpoint transcribes a split (greedy
decoding); each utterance's CER is set against each draw:

- Spearman's rank correlation of CER with the draw, over the utterances;
- the mean CER in four equal-width bins of the draw's range;
- a linear model of CER on all the draws at once (standardized), whose coefficients give each
  draw's effect with the others held fixed, and its R²;
- the share of the CER's variance that lies between voices (espeak-ng variants), and the
  easiest and hardest voices.

Writes ``<results-dir>/corpus_difficulty.{csv,md}`` (the per-draw table),
``<results-dir>/corpus_difficulty_bins.csv`` (mean CER per bin of each draw) and
``docs/figures/corpus_difficulty.png`` (CER against each draw, with the bin means).

    tmaps-synth data=synth_de_hard data.source.seed=1 'data.source.n_utterances={train:1,dev:1000,test:1,test_unseen:1}'
    python scripts/corpus_difficulty.py --checkpoint <German last.ckpt> --corpus data/synth-de-<hash> --split dev

The last line printed gives the CER at the lowest and highest quarter of babble SNR, and the
draw with the largest effect.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import f_oneway, spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler
from torchmetrics.functional.text import char_error_rate

from tmaps.checkpoint import load_checkpoint
from tmaps.data import manifest_loader
from tmaps.data.manifest import read_manifest
from tmaps.inference import GreedyDecoder
from tmaps.introspect.alignment import utterance_outputs
from tmaps.studies.runs import checkpoint_reference

ROOT = Path(__file__).resolve().parents[1]
# The per-utterance draws of the synthetic corpus (tmaps.data.synth) that can make an utterance hard.
DRAWS = {
    "babble_snr_db": "babble SNR (dB)",
    "snr_db": "noise SNR (dB)",
    "rt60_s": "RT60 (s)",
    "speed": "speed factor",
    "rate": "rate (words/min)",
    "pitch": "pitch",
    "babble_talkers": "babble talkers",
}
N_BINS = 4


def utterance_cer(checkpoint: Path, corpus: Path, split: str, cache: Path) -> pd.DataFrame:
    """One row per utterance of ``<corpus>/<split>.jsonl``: its greedy-decoding CER and its draws."""
    loaded = load_checkpoint(checkpoint)
    records = read_manifest(corpus / f"{split}.jsonl")
    loader = manifest_loader(corpus, split, loaded.features, cache, language=records[0]["language"])
    decode = GreedyDecoder(loaded.alphabet)
    rows = []
    for record, log_probs, _ in utterance_outputs(loaded.model, loader):
        (hypothesis,) = decode(log_probs[None], [len(log_probs)])
        rows.append({"id": record["id"], "cer": float(char_error_rate(hypothesis, record["text"]))})
    draws = pd.DataFrame(records).set_index("id")
    present = [draw for draw in DRAWS if draw in draws]
    if not present:
        raise ValueError(f"{corpus / f'{split}.jsonl'} has none of the realism draws {list(DRAWS)}: is it a synthetic corpus?")
    return pd.DataFrame(rows).set_index("id").join(draws[[*present, "speaker"]])


def draw_bins(values: pd.Series) -> pd.Series:
    """The draw itself when it takes few values (e.g. the number of babble talkers), else equal-width bins."""
    return values if values.nunique() <= N_BINS else pd.cut(values, N_BINS)


def voice_effects(utterances: pd.DataFrame) -> dict:
    """The share of the CER's variance that lies between voices, and each voice's mean CER.

    The share is omega squared of a one-way ANOVA, ``df1 (F - 1) / (df1 (F - 1) + N)``, which
    unlike eta squared does not grow with the number of voices when they do not matter (92 voices
    of ~2 utterances each give eta squared near 0.5 by chance alone).

    Returns:
        ``omega_squared``, the ANOVA's ``p``, and ``mean_cer``: a frame of ``mean`` and ``size``
        per voice, easiest first.
    """
    by_voice = utterances.groupby("speaker")["cer"]
    f, p = f_oneway(*(group.to_numpy() for _, group in by_voice))
    excess = (by_voice.ngroups - 1) * (f - 1)
    return {"omega_squared": excess / (excess + len(utterances)), "p": p, "mean_cer": by_voice.agg(["mean", "size"]).sort_values("mean")}


def draw_effects(utterances: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per draw that varies: Spearman's rho and p with CER, and the draw's coefficient in a linear
    model of CER on all the standardized draws (CER per standard deviation), largest effect first;
    and that model's R²."""
    draws = [draw for draw in DRAWS if draw in utterances and utterances[draw].nunique() > 1]
    features = StandardScaler().fit_transform(utterances[draws])
    regression = LinearRegression().fit(features, utterances["cer"])
    rows = [
        {"draw": draw, **dict(zip(("spearman_rho", "p"), spearmanr(utterances[draw], utterances["cer"]))), "cer_per_sd": coefficient}
        for draw, coefficient in zip(draws, regression.coef_)
    ]
    table = pd.DataFrame(rows).sort_values("cer_per_sd", key=abs, ascending=False, ignore_index=True)
    return table, regression.score(features, utterances["cer"])


def binned_cer(utterances: pd.DataFrame, draws: list[str]) -> pd.DataFrame:
    """Mean CER and number of utterances per bin of each draw (:func:`draw_bins`), low to high, one row per bin."""
    rows = []
    for draw in draws:
        for value, group in utterances.groupby(draw_bins(utterances[draw]), observed=True)["cer"]:
            low, high = (value.left, value.right) if isinstance(value, pd.Interval) else (value, value)
            rows.append({"draw": draw, "low": low, "high": high, "mean_cer": group.mean(), "utterances": len(group)})
    return pd.DataFrame(rows)


def difficulty_figure(utterances: pd.DataFrame, bins: pd.DataFrame) -> plt.Figure:
    """One panel per draw: each utterance's CER against the draw (grey) and the mean per bin (red)."""
    draws = list(dict.fromkeys(bins["draw"]))
    figure, axes = plt.subplots(1, len(draws), figsize=(3 * len(draws), 3), sharey=True, squeeze=False)
    for ax, draw in zip(axes[0], draws):
        ax.scatter(utterances[draw], utterances["cer"], s=4, alpha=0.3, color="grey")
        of_draw = bins[bins["draw"] == draw]
        ax.plot((of_draw["low"] + of_draw["high"]) / 2, of_draw["mean_cer"], "o-", color="C3")
        ax.set_xlabel(DRAWS[draw])
    axes[0, 0].set_ylabel("CER per utterance")
    axes[0, 0].set_ylim(0, min(1.5, utterances["cer"].max() * 1.05))
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="a synthetic corpus folder with <split>.jsonl manifests")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "corpus_difficulty", help="where the loader keeps its manifest copy")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "corpus_difficulty.png")
    args = parser.parse_args()

    utterances = utterance_cer(args.checkpoint, args.corpus, args.split, args.cache)
    table, r2 = draw_effects(utterances)
    bins = binned_cer(utterances, list(table["draw"]))
    voices = voice_effects(utterances)
    voice_lines = [f"{voice}: {row['mean']:.3f} (n={int(row['size'])})" for voice, row in voices["mean_cer"].iterrows()]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.results_dir / "corpus_difficulty.csv", index=False)
    bins.to_csv(args.results_dir / "corpus_difficulty_bins.csv", index=False)
    bin_cells = bins.groupby("draw", sort=False).apply(
        lambda of_draw: " / ".join(f"{row.low:.3g}–{row.high:.3g}: {row.mean_cer:.3f} (n={row.utterances})" for row in of_draw.itertuples()),
        include_groups=False,
    )
    checkpoint = checkpoint_reference(args.checkpoint)
    heading = (
        f"# CER per utterance against the corpus' realism draws\n\n{len(utterances)} utterances of {args.corpus.name}/{args.split}, "
        f"checkpoint {checkpoint['path']} ({checkpoint['hash']}); mean CER {utterances['cer'].mean():.3f}. "
        f"Linear model of CER on all draws: R² {r2:.2f}.\n\n"
    )
    voice_text = (
        f"\n\nVoices: {voices['omega_squared']:.2f} of the CER's variance (omega squared) lies between the {len(voice_lines)} voices "
        f"(one-way ANOVA p = {voices['p']:.2g}). Easiest five: {'; '.join(voice_lines[:5])}. Hardest five: {'; '.join(voice_lines[-5:])}.\n"
    )
    report = table.assign(**{"mean CER per bin": table["draw"].map(bin_cells)})
    (args.results_dir / "corpus_difficulty.md").write_text(heading + report.to_markdown(index=False, floatfmt=".3g") + voice_text)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    difficulty_figure(utterances, bins).savefig(args.figure, dpi=120)
    print(report.to_string(index=False))
    print(voice_text.strip())

    cer, strongest = utterances["cer"], table.iloc[0]
    figures = [f"largest effect {strongest['draw']} ({strongest['cer_per_sd']:+.3f} CER per sd, rho {strongest['spearman_rho']:+.2f})"]
    if "babble_snr_db" in utterances:
        babble = utterances["babble_snr_db"]
        low, high = np.quantile(babble, [0.25, 0.75])
        figures.insert(0, f"CER at babble SNR <= {low:.1f} dB {cer[babble <= low].mean():.3f}, >= {high:.1f} dB {cer[babble >= high].mean():.3f}")
    figures += [f"between voices {voices['omega_squared']:.2f} of the variance", f"mean CER {cer.mean():.3f}"]
    print("; ".join(figures))


if __name__ == "__main__":
    main()
