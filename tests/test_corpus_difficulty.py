"""The statistics of scripts/corpus_difficulty.py on utterance tables with a planted cause of errors."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
    table["cer"] = 0.5 - babble_effect * (table["babble_snr_db"] - 10) / 10 + table["speaker"].map(voice_difficulty) + rng.normal(0, 0.1, n)
    return table


def test_the_planted_draw_has_the_largest_effect_and_lower_cer_in_its_easy_bin():
    table = corpus_difficulty.draw_effects(utterances(1000, babble_effect=0.1, voice_effect=0.0))
    strongest = table.iloc[0]
    assert strongest["draw"] == "babble_snr_db"
    assert strongest["cer_per_sd"] < -0.04 and strongest["spearman_rho"] < -0.3
    # bins run from low to high SNR: the noisiest quarter has the highest CER
    first, last = (float(strongest[column].split(": ")[1].split(" ")[0]) for column in ("bin1", "bin4"))
    assert first > last + 0.1
    assert (table.loc[table["draw"] != "babble_snr_db", "cer_per_sd"].abs() < 0.02).all()
    assert 0.15 < table.attrs["r2"] < 0.4  # the planted share: 0.058² / (0.058² + 0.1²) = 0.25


def test_a_draw_with_few_values_is_binned_by_value():
    table = corpus_difficulty.draw_effects(utterances(300, babble_effect=0.1, voice_effect=0.0))
    talkers = table.set_index("draw").loc["babble_talkers"]
    assert [talkers[f"bin{i}"].split(":")[0] for i in (1, 2, 3)] == ["1", "2", "3"]


@pytest.mark.parametrize(("n", "voice_effect", "expected"), [(200, 0.0, (-0.2, 0.1)), (1000, 0.0, (-0.05, 0.05)), (1000, 0.15, (0.4, 0.9))])
def test_voice_share_is_near_zero_when_voices_do_not_matter_even_with_two_utterances_a_voice(n, voice_effect, expected):
    result = corpus_difficulty.voice_effects(utterances(n, babble_effect=0.0, voice_effect=voice_effect))
    assert expected[0] < result["omega_squared"] < expected[1]
    assert (result["p"] < 1e-6) == (voice_effect > 0)
    assert result["mean_cer"]["mean"].is_monotonic_increasing
