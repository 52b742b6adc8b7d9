"""The learning-rate schedules of ``optim.schedule``, step by step, as a run of ``total_steps`` optimizer steps sees them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmaps.training.module import SCHEDULES, learning_rate_scheduler

PEAK, WARMUP, TOTAL = 4e-3, 10, 100


def rates_and_beta1(optim: dict, total_steps: int = TOTAL) -> tuple[np.ndarray, np.ndarray]:
    """The rate and AdamW's beta1 of every step of a run, read before the step as Lightning's loop uses them."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=optim["lr"], betas=(0.9, 0.98))
    scheduler = learning_rate_scheduler(optimizer, optim, total_steps)
    rates, betas = [], []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
    return np.array(rates), np.array(betas)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_rises_to_the_peak_rate_in_warmup_steps_and_never_exceeds_it(schedule):
    rates, _ = rates_and_beta1({"lr": PEAK, "schedule": schedule, "warmup_steps": WARMUP, "min_lr_ratio": 0.02})
    assert rates[WARMUP - 1] == pytest.approx(PEAK)
    assert np.all(np.diff(rates[:WARMUP]) > 0)
    assert rates.max() == pytest.approx(PEAK)


def test_one_cycle_starts_at_a_25th_of_the_peak_and_ends_at_min_lr_ratio_of_it_cycling_beta1_against_the_rate():
    rates, beta1 = rates_and_beta1({"lr": PEAK, "schedule": "onecycle", "warmup_steps": WARMUP, "min_lr_ratio": 0.01})
    assert rates[0] == pytest.approx(PEAK / 25)
    assert rates[-1] == pytest.approx(PEAK * 0.01)
    assert np.all(np.diff(rates[WARMUP - 1 :]) < 0)
    assert beta1[0] == pytest.approx(0.95) and beta1[WARMUP - 1] == pytest.approx(0.85) and beta1[-1] == pytest.approx(0.95)


@pytest.mark.parametrize("warmup_steps", [0, 1])
def test_one_cycle_with_no_floor_anneals_to_zero_and_with_no_warmup_only_falls_from_the_peak(warmup_steps):
    rates, _ = rates_and_beta1({"lr": PEAK, "schedule": "onecycle", "warmup_steps": warmup_steps, "min_lr_ratio": 0.0})
    assert rates[0] == pytest.approx(PEAK, rel=1e-3) and np.all(np.diff(rates) < 0)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("total_steps", [1, 3, TOTAL])
def test_a_one_cycle_warmup_longer_than_the_run_rises_until_its_last_step(total_steps):
    rates, _ = rates_and_beta1({"lr": PEAK, "schedule": "onecycle", "warmup_steps": 2 * TOTAL, "min_lr_ratio": 0.02}, total_steps)
    assert np.all(np.diff(rates[:-1]) > 0) and rates[-1] == pytest.approx(PEAK * 0.02)
