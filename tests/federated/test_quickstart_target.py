"""The quickstart's headline claim, as a regression test (about 10 s)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from fedlab.data import federated_digits
from fedlab.federated import build_federation


@pytest.mark.slow
def test_fedavg_on_dirichlet_digits_reaches_093_within_50_rounds() -> None:
    data = federated_digits(num_clients=100, scheme="dirichlet", alpha=0.5, seed=0)
    fed = build_federation(
        data,
        model="digits_cnn",
        strategy="fedavg",
        clients_per_round=10,
        local_epochs=5,
        batch_size=10,
        client_lr=0.1,
        seed=0,
    )
    history = fed.run(50)
    reached = history.rounds_to_accuracy(0.93)
    assert reached is not None and reached <= 50, history.series("test_accuracy")[-10:]
    assert history.last_accuracy() >= 0.92
