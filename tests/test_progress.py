"""Round progress: a tqdm bar and log lines that follow a federation as observers."""

from __future__ import annotations

import io
import logging

import pytest

import fedlab
from fedlab.federated.types import RoundResult
from fedlab.log import configure_logging
from fedlab.progress import RoundLogger, RoundProgress, round_summary, track


@pytest.fixture(scope="module")
def federation():
    data = fedlab.federated_digits(num_clients=6, scheme="iid", seed=0)
    return fedlab.build_federation(
        data, model="digits_cnn", clients_per_round=3, local_epochs=1, batch_size=16, seed=0
    )


def test_track_draws_one_step_per_round_and_unsubscribes(federation) -> None:
    out = io.StringIO()
    before = list(federation.observers)
    with track(federation, total=2, desc="FedAvg", file=out, mininterval=0) as progress:
        assert progress in federation.observers
        history = federation.run(2)
    assert federation.observers == before  # unsubscribed on the way out
    assert progress.rounds_seen == 2 and progress.bar.n == 2
    text = out.getvalue()
    assert "FedAvg" in text and "2/2" in text
    last = history[-1]
    assert f"acc={last.test_accuracy:.3f}" in text and "clients=3/3" in text


def test_track_unsubscribes_when_a_round_raises(federation) -> None:
    class Boom(Exception):
        pass

    before = list(federation.observers)
    with pytest.raises(Boom), track(federation, total=1, file=io.StringIO()):
        raise Boom
    assert federation.observers == before


def test_round_logger_logs_each_round_at_info(federation) -> None:
    stream = io.StringIO()
    saved = logging.getLogger("fedlab").handlers[:], logging.getLogger("fedlab").level
    configure_logging("info", stream=stream)
    logger = RoundLogger("digits")
    federation.add_observer(logger)
    try:
        federation.run(1)
    finally:
        federation.remove_observer(logger)
        fl = logging.getLogger("fedlab")
        fl.handlers[:], fl.level, fl.propagate = saved[0], saved[1], True
    line = stream.getvalue()
    assert f"digits round {federation.rounds_done - 1}: clients=3/3 acc=" in line, line


def test_summary_leaves_out_what_was_not_evaluated() -> None:
    result = RoundResult(round_index=4, selected=(1, 2, 3), completed=(1, 2))
    assert round_summary(result) == {"clients": "2/3"}


@pytest.mark.parametrize("total", [0, -1, 2.5, True])
def test_bad_total_is_refused(total) -> None:
    with pytest.raises(ValueError, match=repr(total)):
        RoundProgress(total)
