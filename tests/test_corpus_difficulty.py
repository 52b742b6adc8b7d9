"""The statistics of scripts/corpus_difficulty.py on utterance tables with a planted cause of errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "corpus_difficulty.py"
spec = importlib.util.spec_from_file_location("corpus_difficulty", SCRIPT)
corpus_difficulty = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpus_difficulty)


def utterances(n: int, babble_effect: float, voice_effect: float, n_voices: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "babble_snr_db": rng.uniform(0, 20, n),
        "snr_db": rng.uniform(5, 25, n),
        "rt60_s": rng.uniform(0.2, 0.8, n),
        "babble_talkers": rng.integers(1, 4, n),
        "speaker": rng.choice([f"voice{i}" for i in range(n_voices)], n),
    })  # fmt: skip
    voice_difficulty = dict(zip(sorted(table["speaker"].unique()), rng.normal(0, voice_effect, n_voices)))
    table.attrs["voice_difficulty"] = voice_difficulty
    table["cer"] = 0.5 - babble_effect * (table["babble_snr_db"] - 10) / 10 + table["speaker"].map(voice_difficulty) + rng.normal(0, 0.1, n)
    return table


def test_the_planted_draw_has_the_largest_effect_and_the_highest_cer_in_its_noisiest_bin():
    table, r2 = corpus_difficulty.draw_effects(utterances(1000, babble_effect=0.1, voice_effect=0.0))
    strongest = table.iloc[0]
    assert strongest["draw"] == "babble_snr_db"
    assert strongest["cer_per_sd"] < -0.04 and strongest["spearman_rho"] < -0.3
    assert (table.loc[table["draw"] != "babble_snr_db", "cer_per_sd"].abs() < 0.02).all()
    assert 0.15 < r2 < 0.4  # the planted share: 0.058² / (0.058² + 0.1²) = 0.25
    bins = corpus_difficulty.binned_cer(utterances(1000, babble_effect=0.1, voice_effect=0.0), ["babble_snr_db"])
    assert len(bins) == 4 and bins["low"].is_monotonic_increasing
    assert bins["mean_cer"].iloc[0] > bins["mean_cer"].iloc[-1] + 0.1


def test_a_draw_with_few_values_is_binned_by_value():
    bins = corpus_difficulty.binned_cer(utterances(300, babble_effect=0.1, voice_effect=0.0), ["babble_talkers"])
    assert bins["low"].tolist() == bins["high"].tolist() == [1, 2, 3]
    assert bins["utterances"].sum() == 300


def test_voice_share_stays_near_zero_where_eta_squared_is_large_by_chance():
    table = utterances(200, babble_effect=0.0, voice_effect=0.0)
    by_voice = table.groupby("speaker")["cer"]
    eta_squared = (by_voice.size() * (by_voice.mean() - table["cer"].mean()) ** 2).sum() / ((table["cer"] - table["cer"].mean()) ** 2).sum()
    result = corpus_difficulty.voice_effects(table)
    assert eta_squared > 0.25 and abs(result["omega_squared"]) < 0.3  # over 40 seeds: eta squared >= 0.29, |omega squared| <= 0.20
    assert result["p"] > 1e-3


def test_voice_share_finds_voices_that_matter_and_ranks_them_as_planted():
    table = utterances(1000, babble_effect=0.0, voice_effect=0.15)
    result = corpus_difficulty.voice_effects(table)
    assert 0.4 < result["omega_squared"] < 0.9 and result["p"] < 1e-6
    planted = result["mean_cer"].index.map(table.attrs["voice_difficulty"])
    assert spearmanr(planted, result["mean_cer"]["mean"]).statistic > 0.9
