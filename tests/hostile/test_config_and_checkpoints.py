"""Items 5 and 6: checkpoints verify a checksum and fall back one file at a time; every
invalid configuration value is a ValueError naming the field and quoting the value."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlab.federated import ClientPlan, Federation, FederationConfig
from fedlab.federated.checkpoint import (
    CheckpointError,
    FederationState,
    latest_checkpoint,
    save_checkpoint,
)
from tests.hostile.conftest import HOSTILE
from tests.hostile.test_round_updates import NumpyRuntime


def state(rounds: int) -> FederationState:
    weights = (np.full((5, 3), rounds, np.float32), np.arange(3, dtype=np.float32) + rounds)
    return FederationState(
        rounds_done=rounds,
        weights=weights,
        strategy_state={"velocity": tuple(w * 0.5 for w in weights)},
        history=[{"round_index": r, "train_loss": 0.5} for r in range(rounds)],
        fingerprint="abc123",
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, state(1))
    newest = save_checkpoint(folder, state(2))
    return folder, newest.read_bytes()


def fall_back(folder, newest_bytes: bytes) -> None:
    (folder / "round-000002.npz").write_bytes(newest_bytes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = latest_checkpoint(folder)
    assert got is not None
    assert got.rounds_done == 1, "a damaged checkpoint was loaded"
    assert float(got.weights[0][0, 0]) == 1.0
    assert any("round-000002.npz" in str(w.message) for w in caught), caught


@HOSTILE
@given(data=st.data())
def test_a_byte_flip_in_the_newest_checkpoint_falls_back_to_the_previous(saved, tmp_path, data):
    folder, original = saved
    work = tmp_path / "f"
    work.mkdir(exist_ok=True)
    (work / "round-000001.npz").write_bytes((folder / "round-000001.npz").read_bytes())
    raw = bytearray(original)
    raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] ^= data.draw(
        st.integers(1, 255), label="xor"
    )
    fall_back(work, bytes(raw))


def test_every_byte_flip_of_the_newest_checkpoint_falls_back(saved, tmp_path) -> None:
    """Exhaustive (xor 0xFF at every offset): the issue's 20 crashing flips included."""
    folder, original = saved
    (tmp_path / "round-000001.npz").write_bytes((folder / "round-000001.npz").read_bytes())
    for at in range(0, len(original)):
        raw = bytearray(original)
        raw[at] ^= 0xFF
        fall_back(tmp_path, bytes(raw))


@HOSTILE
@given(cut=st.integers(0, 10_000))
def test_a_truncated_newest_checkpoint_falls_back(saved, tmp_path, cut) -> None:
    folder, original = saved
    (tmp_path / "round-000001.npz").write_bytes((folder / "round-000001.npz").read_bytes())
    fall_back(tmp_path, original[: cut % len(original)])


def test_when_every_checkpoint_is_damaged_the_error_lists_them(saved, tmp_path) -> None:
    _, original = saved
    (tmp_path / "round-000001.npz").write_bytes(original[:-1])
    (tmp_path / "round-000002.npz").write_bytes(b"\x00" + original[1:])
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError) as caught:
        latest_checkpoint(tmp_path)
    assert "round-000001.npz: checksum mismatch" in str(caught.value)
    assert "round-000002.npz: not a fedlab checkpoint" in str(caught.value)


def test_resume_skips_a_flipped_checkpoint_with_a_warning(small_digits, tmp_path) -> None:
    config = FederationConfig(clients_per_round=4, eval_every=100)
    fed = Federation(
        data=small_digits, runtime=NumpyRuntime(), config=config, checkpoint_dir=tmp_path
    )
    fed.run(3)
    newest = tmp_path / "round-000003.npz"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    newest.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="round-000003.npz: checksum mismatch"):
        again = Federation(
            data=small_digits,
            runtime=NumpyRuntime(),
            config=config,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    assert again.rounds_done == 2
    again.run(1)
    assert all(np.array_equal(a, b) for a, b in zip(again.weights, fed.weights, strict=True))


BAD_CONFIG = [
    ("clients_per_round", True),
    ("clients_per_round", 2.0),
    ("clients_per_round", "10"),
    ("client_lr", "0.05"),
    ("client_lr", math.inf),
    ("client_lr", True),
    ("seed", -1),
    ("seed", 1.5),
    ("seed", True),
    ("seed", "0"),
    ("local_epochs", True),
    ("batch_size", np.float64(10.0)),
    ("eval_every", None),
    ("client_momentum", "0.9"),
    ("client_momentum", math.nan),
    ("dropout_rate", "0"),
    ("dropout_rate", math.nan),
    ("deadline_s", math.inf),
    ("deadline_s", "30"),
    ("over_selection", math.nan),
    ("seconds_per_example", -1.0),
    ("seconds_per_example", math.inf),
    ("client_optimizer", 3),
    ("client_optimizer", ["sgd"]),
]


@pytest.mark.parametrize(("name", "value"), BAD_CONFIG, ids=[f"{n}={v!r}" for n, v in BAD_CONFIG])
def test_every_invalid_config_value_is_a_value_error_naming_field_and_value(name, value) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be .*, got {re.escape(repr(value))}$"):
        FederationConfig(**{name: value})


@pytest.mark.parametrize("value", [math.nan, 1.5, True, "0.5", 0.0])
def test_client_fraction_is_checked_too(value) -> None:
    with pytest.raises(
        ValueError, match=f"client_fraction must be .*, got {re.escape(repr(value))}"
    ):
        FederationConfig(clients_per_round=None, client_fraction=value)


def test_server_lr_inf_and_a_checkpoint_dir_that_is_a_file_are_refused(
    small_digits, tmp_path
) -> None:
    from fedlab.federated import build_federation

    with pytest.raises(
        ValueError, match="strategy parameter server_lr must be a finite number, got inf"
    ):
        build_federation(small_digits, strategy="fedavgm", strategy_params={"server_lr": math.inf})
    with pytest.raises(
        ValueError, match="strategy parameter server_lr must be a finite number, got nan"
    ):
        build_federation(small_digits, strategy="fedadam", strategy_params={"server_lr": math.nan})
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    with pytest.raises(
        ValueError, match=f"checkpoint_dir must be a folder, got '{file}', which is a file"
    ):
        build_federation(small_digits, checkpoint_dir=file)
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder"):
        Federation(data=small_digits, runtime=NumpyRuntime(), checkpoint_dir=file, resume=True)
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder"):
        save_checkpoint(file, state(1))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("seed", "abc"),
        ("seed", -1),
        ("epochs", 2.5),
        ("epochs", "3"),
        ("batch_size", True),
        ("learning_rate", math.inf),
        ("learning_rate", "0.1"),
        ("optimizer", "rmsprop"),
        ("momentum", 1.0),
        ("client_id", -2),
        ("round_index", None),
        ("proximal_mu", math.nan),
    ],
)
def test_a_client_plan_checks_types_and_names_the_field(name, value) -> None:
    fields = {"client_id": 0, "round_index": 0, "epochs": 1, "batch_size": 8, "learning_rate": 0.1}
    with pytest.raises(ValueError, match=f"^{name} must be .*, got {re.escape(repr(value))}$"):
        ClientPlan(**{**fields, name: value})
    assert ClientPlan(**fields, seed=np.int64(4)).seed == 4
