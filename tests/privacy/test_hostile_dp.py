"""Issue 18 in the privacy layer: an overflowing update never makes a NaN model, and a failed
checkpoint write never lets the budget be overspent."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from fedlab.data import federated_digits
from fedlab.federated import ClientUpdate, Federation, FederationConfig, KerasRuntime
from fedlab.models import build_model
from fedlab.privacy import (
    BudgetExceeded,
    DPFedAvg,
    PrivacyLedger,
    PrivacyTracker,
    clip_by_global_norm,
    global_norm,
)

W = (np.zeros(4, np.float32), np.zeros((2, 3), np.float32))


def update(cid: int, value: float) -> ClientUpdate:
    return ClientUpdate(cid, tuple(np.full(w.shape, value, np.float32) for w in W), 1)


def test_global_norm_does_not_overflow_and_flags_non_finite() -> None:
    big = tuple(np.full(w.shape, 3e38, np.float32) for w in W)
    assert global_norm(big) == pytest.approx(float(np.float32(3e38)) * math.sqrt(10), rel=1e-12)
    assert math.isnan(global_norm((np.array([1.0, np.inf], np.float32),)))
    assert math.isnan(global_norm((np.array([np.nan], np.float32),)))
    clipped, norm = clip_by_global_norm(big, 2.0)
    assert global_norm(clipped) == pytest.approx(2.0, rel=1e-6) and math.isfinite(norm)


@pytest.mark.parametrize("adaptive", [False, True])
def test_an_update_whose_norm_overflows_float32_is_clipped_not_a_nan_model(adaptive) -> None:
    dp = DPFedAvg(
        noise_multiplier=0.0,
        clip_norm=1.0,
        expected_clients=2,
        target_quantile=0.5 if adaptive else None,
        clipped_count_stddev=0.0,  # a noiseless count, so the clip update is deterministic
    )
    honest = update(0, 0.01)
    hostile = update(1, 3e38)  # finite in float32; its squared norm is not
    new, state = dp.aggregate(W, [honest, hostile], dp.init_state(W))
    assert all(np.isfinite(w).all() for w in new)
    expected = [
        (h + c) / 2
        for h, c in zip(honest.delta, clip_by_global_norm(hostile.delta, 1.0)[0], strict=True)
    ]
    for got, want in zip(new, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    if adaptive:  # the hostile update counts as clipped, the honest one as unclipped
        reference = DPFedAvg(
            noise_multiplier=0.0,
            clip_norm=1.0,
            expected_clients=2,
            target_quantile=0.5,
            clipped_count_stddev=0.0,
        )
        _, ref_state = reference.aggregate(W, [honest, update(1, 5.0)], reference.init_state(W))
        assert dp.current_clip(state) == pytest.approx(reference.current_clip(ref_state))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_update_is_left_out_of_the_sum(bad: float) -> None:
    dp = DPFedAvg(noise_multiplier=0.0, clip_norm=1.0, expected_clients=2)
    honest = update(0, 0.01)
    new, _ = dp.aggregate(W, [honest, update(1, bad)], dp.init_state(W))
    for got, h in zip(new, honest.delta, strict=True):
        np.testing.assert_allclose(got, h / 2, rtol=1e-6)
    only_bad, _ = dp.aggregate(W, [update(1, bad)], dp.init_state(W))
    assert all(np.array_equal(w, np.zeros_like(w)) for w in only_bad)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files: chmod for a normal user, the immutable flag for root."""
    folder.chmod(0o555)
    immutable = False
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        pass
    else:  # root ignores the mode bits
        probe.unlink()
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make {folder} read-only as root: {done.stderr!r}")
        immutable = True
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_failed_checkpoint_write_never_lets_the_budget_be_overspent(tmp_path) -> None:
    digits = federated_digits(num_clients=20, alpha=0.5, seed=1)
    runtime = KerasRuntime(lambda: build_model("digits_cnn", (8, 8, 1), 10, seed=0))
    folder = tmp_path / "checkpoints"
    fed = Federation(
        data=digits,
        runtime=runtime,
        config=FederationConfig(clients_per_round=5, batch_size=8, client_lr=0.1, seed=2),
        strategy=DPFedAvg(noise_multiplier=2.0, clip_norm=0.5, expected_clients=5),
        checkpoint_dir=folder,
    )
    ledger = PrivacyLedger(20, 1e-3, "fixed")
    for _ in range(3):
        ledger.record_round(noise_multiplier=2.0, cohort=5)
    budget = (ledger.epsilon() + ledger.epsilon_after_next(noise_multiplier=2.0, cohort=5)) / 2
    tracker = PrivacyTracker(population=20, delta=1e-3, budget_epsilon=budget).attach(fed)

    fed.run_round()  # written
    failures = 0
    with read_only(folder):
        for _ in range(5):
            try:
                fed.run_round()
            except OSError:
                failures += 1  # the round was released, its checkpoint was not written
            except BudgetExceeded:
                break
            assert tracker.ledger.rounds == fed.rounds_done  # every release is in the ledger
    assert failures == 2 and fed.rounds_done == 3  # the budget allowed exactly 3 rounds
    assert tracker.ledger.epsilon() == pytest.approx(ledger.epsilon(), rel=1e-12)
    assert tracker.ledger.epsilon() <= budget
    assert sorted(os.listdir(folder)) == ["round-000001.npz"]
