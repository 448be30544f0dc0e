"""Checkpoints carry the dispatcher's client-side state: a federation with error-feedback
codecs resumed from disk continues bit for bit (no manual state handling)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedlab.codec import QSGD, ErrorFeedback, TopK, Zlib, chain
from fedlab.federated.checkpoint import CheckpointError, latest_checkpoint, save_checkpoint
from tests.federated.test_codec_stage import codec_pipeline, federation

CODEC = ErrorFeedback(chain(TopK(0.2), QSGD(bits=4), Zlib()))


def test_resume_restores_the_clients_residuals_exactly(tmp_path) -> None:
    straight = federation(codec_pipeline(CODEC))
    straight.run(4)
    first = federation(codec_pipeline(CODEC), checkpoint_dir=tmp_path)
    first.run(2)
    state = latest_checkpoint(tmp_path)
    assert state is not None and any(k.startswith("client/") for k in state.dispatcher_state)
    resumed = federation(codec_pipeline(CODEC), checkpoint_dir=tmp_path, resume=True)
    assert resumed.rounds_done == 2
    resumed.run(2)
    assert [a.tobytes() for a in resumed.weights] == [b.tobytes() for b in straight.weights]
    # reset() forgets the residuals too: the same as a fresh federation
    resumed.reset()
    resumed.run(4)
    assert [a.tobytes() for a in resumed.weights] == [b.tobytes() for b in straight.weights]


def test_a_checkpoint_with_damaged_client_state_is_refused(tmp_path) -> None:
    fed = federation(codec_pipeline(CODEC), checkpoint_dir=tmp_path)
    fed.run(1)
    state = latest_checkpoint(tmp_path)
    assert state is not None
    key = next(k for k in state.dispatcher_state if k.startswith("client/"))
    bad = dict(state.dispatcher_state)
    bad[key] = bad[key][:-3]
    damaged = tmp_path / "damaged"
    save_checkpoint(damaged, replace(state, dispatcher_state=bad))
    with pytest.raises(CheckpointError, match="dispatcher state refused"):
        federation(codec_pipeline(CODEC), checkpoint_dir=damaged, resume=True)
    assert np.all(np.isfinite(fed.weights[0]))
