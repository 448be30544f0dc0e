"""Item 2 (and 1, 3) in the simulated federation: a hostile or broken update is rejected
with its reason, the other updates of the round are aggregated, the model stays finite."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fedlab.federated import ClientUpdate, Federation, FederationConfig
from fedlab.federated.stages import UpdatePolicy, l2_norm
from fedlab.federated.strategies import FedAvgM

SHAPES = ((6, 4), (4,))


class NumpyRuntime:
    """Honest clients step a fixed direction (scaled by their id); ``hostile`` rewrites
    the update of the first client trained in each round. No TensorFlow: milliseconds."""

    def __init__(self, hostile=None) -> None:
        self.hostile = hostile
        self.victims: list[int] = []

    def initial_weights(self):
        return (np.full(SHAPES[0], 0.5, np.float32), np.zeros(SHAPES[1], np.float32))

    @staticmethod
    def honest(cid: int, n: int) -> ClientUpdate:
        delta = tuple(np.full(s, 0.01 * (1 + cid % 3), np.float32) for s in SHAPES)
        return ClientUpdate(cid, delta, n, num_steps=3, metrics={"train_loss": 0.25})

    def train_clients(self, global_weights, jobs):
        out = [self.honest(c.client_id, c.num_examples) for c, _ in jobs]
        if self.hostile is not None and out:
            self.victims.append(out[0].client_id)
            out[0] = self.hostile(out[0])
        return out

    def evaluate(self, weights, x, y, *, batch_size=1024):
        return {"loss": 0.0, "accuracy": 0.0}


def forge(**fields):
    def apply(update: ClientUpdate) -> ClientUpdate:
        values = {
            "client_id": update.client_id,
            "delta": update.delta,
            "num_examples": update.num_examples,
            "num_steps": update.num_steps,
            "metrics": update.metrics,
        }
        values.update({k: (v(update) if callable(v) else v) for k, v in fields.items()})
        return ClientUpdate(**values)

    return apply


def scaled(factor, dtype=np.float32):
    return lambda u: tuple((d.astype(np.float64) * factor).astype(dtype) for d in u.delta)


HOSTILE = {
    "num_examples=1e9": (
        forge(num_examples=10**9),
        r"num_examples must be in \[1, \d+\], got 1000000000",
    ),
    "num_examples=1e400": (
        forge(num_examples=float("inf")),
        "num_examples must be an integer, got inf",
    ),
    "num_examples=true": (forge(num_examples=True), "num_examples must be an integer, got True"),
    "num_examples=nan": (
        forge(num_examples=float("nan")),
        "num_examples must be an integer, got nan",
    ),
    "num_examples=2.5": (forge(num_examples=2.5), "num_examples must be an integer, got 2.5"),
    "num_examples='7'": (forge(num_examples="7"), "num_examples must be an integer, got '7'"),
    "num_examples=0": (forge(num_examples=0), r"num_examples must be in \[1, \d+\], got 0"),
    "num_examples=own+1": (
        forge(num_examples=lambda u: u.num_examples + 1),
        r"num_examples must be in \[1, (\d+)\], got \1?\d+",
    ),
    "train_loss text": (
        forge(metrics={"train_loss": "0.1"}),
        "metric 'train_loss' must be a finite number, got '0.1'",
    ),
    "train_loss nan": (
        forge(metrics={"train_loss": float("nan")}),
        "metric 'train_loss' must be a finite number, got nan",
    ),
    "metric inf": (
        forge(metrics={"acc": float("inf")}),
        "metric 'acc' must be a finite number, got inf",
    ),
    "metrics not a mapping": (forge(metrics=["loss"]), "metrics must be a mapping"),
    "num_steps=-1": (forge(num_steps=-1), "num_steps must be an integer >= 0, got -1"),
    "delta x 1e30": (forge(delta=scaled(1e30)), "exceeds the bound"),
    "delta 3e38": (
        forge(delta=lambda u: tuple(np.full(s, 3e38, np.float32) for s in SHAPES)),
        "exceeds the bound",
    ),
    "delta float64 1e300": (forge(delta=scaled(1e302, np.float64)), "exceeds the bound"),
    "delta NaN": (forge(delta=scaled(np.nan)), r"non-finite values \(NaN\)"),
    "delta int": (
        forge(delta=lambda u: tuple(np.ones(s, np.int32) for s in SHAPES)),
        "expected floating point",
    ),
    "delta lists": (
        forge(delta=lambda u: tuple(d.tolist() for d in u.delta)),
        "is a list, not an ndarray",
    ),
    "delta wrong shape": (
        forge(delta=lambda u: (u.delta[0].T, u.delta[1])),
        r"tensor 0 has shape \(4, 6\)",
    ),
    "delta missing": (forge(delta=lambda u: u.delta[:1]), "update has 1 tensors, the model has 2"),
    "delta None": (forge(delta=None), "update has NoneType tensors"),
    "relabelled client id": (forge(client_id=lambda u: u.client_id + 1), "it was asked of client"),
    "client id text": (forge(client_id="3"), "update claims client '3'"),
}


def federation(small_digits, runtime, **kwargs) -> Federation:
    config = FederationConfig(clients_per_round=5, seed=3, eval_every=100)
    return Federation(data=small_digits, runtime=runtime, config=config, **kwargs)


def honest_step(fed: Federation, completed) -> tuple[np.ndarray, ...]:
    counts = [fed.data.clients[c].num_examples for c in completed]
    deltas = [NumpyRuntime.honest(c, n).delta for c, n in zip(completed, counts, strict=True)]
    return tuple(
        sum(n * d[i].astype(np.float64) for n, d in zip(counts, deltas, strict=True)) / sum(counts)
        for i in range(len(SHAPES))
    )


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_update_is_rejected_and_the_round_keeps_the_others(small_digits, case) -> None:
    hostile, reason = HOSTILE[case]
    runtime = NumpyRuntime(hostile)
    fed = federation(small_digits, runtime)
    before = fed.weights
    result = fed.run_round()
    victim = runtime.victims[0]
    assert [c for c, _ in result.rejected] == [victim]
    assert re.search(reason, result.rejected[0][1]), result.rejected
    assert sorted(result.completed) == sorted(c for c in result.selected if c != victim)
    assert result.num_examples == sum(fed.data.clients[c].num_examples for c in result.completed)
    assert math.isfinite(result.train_loss)
    step = honest_step(fed, result.completed)
    for w, b, s in zip(fed.weights, before, step, strict=True):
        np.testing.assert_allclose(w, b + s, rtol=1e-5)  # exactly the honest clients' step


def test_a_large_claim_cannot_turn_the_global_step(small_digits) -> None:
    """The issue's attack: 1e9 examples with a -5x delta turned the step to cosine -0.97."""
    attack = forge(num_examples=10**9, delta=scaled(-5.0))
    runtime = NumpyRuntime(attack)
    fed = federation(small_digits, runtime)
    before = fed.weights
    result = fed.run_round()
    got = np.concatenate([(w - b).ravel() for w, b in zip(fed.weights, before, strict=True)])
    honest = np.concatenate([s.ravel() for s in honest_step(fed, result.completed)])
    cosine = got @ honest / (np.linalg.norm(got) * np.linalg.norm(honest))
    assert cosine > 0.999 and len(result.rejected) == 1


def test_fedavgm_stays_finite_under_3e38_updates(small_digits) -> None:
    runtime = NumpyRuntime(
        forge(delta=lambda u: tuple(np.full(s, 3e38, np.float32) for s in SHAPES))
    )
    fed = federation(small_digits, runtime, strategy=FedAvgM(server_lr=1.0, momentum=0.9))
    for _ in range(3):
        result = fed.run_round()
        assert len(result.rejected) == 1 and len(result.completed) == 4
    assert all(np.isfinite(w).all() for w in fed.weights)


def test_a_round_where_every_update_is_hostile_keeps_the_model() -> None:
    from fedlab.data import federated_digits

    data = federated_digits(num_clients=4, seed=0)
    runtime = NumpyRuntime()
    runtime.train_clients = lambda w, jobs: [  # type: ignore[method-assign]
        forge(num_examples=True)(NumpyRuntime.honest(c.client_id, 5)) for c, _ in jobs
    ]
    fed = Federation(data=data, runtime=runtime, config=FederationConfig(clients_per_round=4))
    before = fed.weights
    result = fed.run_round()
    assert len(result.rejected) == 4 and result.completed == ()
    assert all(np.array_equal(a, b) for a, b in zip(fed.weights, before, strict=True))


def test_norms_do_not_overflow_float32() -> None:
    big = (np.full(1000, 3e38, np.float32), np.full(10, -3e38, np.float32))
    norm = l2_norm(big)
    assert math.isfinite(norm) and norm == pytest.approx(
        float(np.float32(3e38)) * math.sqrt(1010), rel=1e-9
    )
    assert l2_norm((np.array([np.inf], np.float32),)) == math.inf
    assert math.isnan(l2_norm((np.array([1.0, np.nan]),)))
    assert l2_norm((np.zeros(3),)) == 0.0
    assert UpdatePolicy().norm_bound(big) == pytest.approx(10 * norm)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_examples": 0}, "max_examples must be an int >= 1, got 0"),
        ({"max_examples": 1.5}, "max_examples must be an int >= 1, got 1.5"),
        ({"max_norm_ratio": float("inf")}, "max_norm_ratio must be a finite number > 0, got inf"),
        ({"norm_floor": "1"}, "norm_floor must be a finite number > 0, got '1'"),
    ],
)
def test_update_policy_refuses_bad_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        UpdatePolicy(**kwargs)
