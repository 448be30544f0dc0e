"""Items 1-3 on the device path: every update file is accepted or rejected on its own, with
the reason; the valid updates of the round are never lost."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlab.edge.transport import FileTransport, _npz_bytes
from fedlab.federated import UpdateRejected
from tests.hostile.conftest import (
    DEVICES,
    HOSTILE,
    SHAPES,
    exchange_with,
    header_of,
    honest_update,
    make_task,
    write_update,
)

TASK = make_task()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exchange folder with four honest updates (a, b, c and the victim m)."""
    folder = tmp_path_factory.mktemp("pristine")
    exchange_with(folder, TASK)
    return folder


def fresh(pristine: Path, tmp_path: Path, name: str) -> FileTransport:
    target = tmp_path / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(pristine, target)
    return FileTransport(target)


def check_round(exchange: FileTransport, original: dict | None = None) -> str:
    """collect() never raises; a, b and c are accepted unchanged; the victim m is either
    rejected with a reason naming its file, or accepted *identical* to what was sent.
    Returns "rejected" or "accepted"."""
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    got = dict(accepted)
    for i, device in enumerate("abc"):
        update = got[f"{device}-r1.npz"]
        for d, e in zip(update.delta, honest_update(i).delta, strict=True):
            np.testing.assert_array_equal(d, e)
    reasons = dict(rejected)
    assert set(got) | set(reasons) == {f"{d}-r1.npz" for d in "abcm"}
    if "m-r1.npz" in reasons:
        assert reasons["m-r1.npz"].startswith("m-r1.npz: ") and len(reasons["m-r1.npz"]) > 12
        return "rejected"
    victim = got["m-r1.npz"]
    expected = honest_update(3)
    assert victim.num_examples == expected.num_examples
    assert victim.metrics == dict(expected.metrics)
    for d, e in zip(victim.delta, expected.delta, strict=True):
        np.testing.assert_array_equal(d, e)  # a flip that changed the update was accepted
    return "accepted"


@HOSTILE
@given(data=st.data())
def test_byte_flips_of_an_update_file_cost_only_that_file(pristine, tmp_path, data) -> None:
    exchange = fresh(pristine, tmp_path, "flip")
    path = exchange.updates / "m-r1.npz"
    raw = bytearray(path.read_bytes())
    at = data.draw(st.integers(0, len(raw) - 1), label="offset")
    raw[at] ^= data.draw(st.integers(1, 255), label="xor")
    path.write_bytes(bytes(raw))
    check_round(exchange)


def test_every_single_byte_flip_of_an_update_file_is_refused_or_harmless(
    pristine, tmp_path
) -> None:
    """Exhaustive over offsets (xor 0xFF): the 12 NotImplementedError flips of the issue."""
    exchange = fresh(pristine, tmp_path, "all")
    path = exchange.updates / "m-r1.npz"
    original = path.read_bytes()
    outcomes = {"rejected": 0, "accepted": 0}
    for at in range(len(original)):
        raw = bytearray(original)
        raw[at] ^= 0xFF
        path.write_bytes(bytes(raw))
        outcomes[check_round(exchange)] += 1
    # check_round proved each accepted flip left the update identical (zip timestamps,
    # version and extra fields: bytes no reader uses); every other flip was refused.
    assert outcomes["rejected"] > 0 and sum(outcomes.values()) == len(original), outcomes


@HOSTILE
@given(data=st.data())
def test_truncated_update_files_are_refused(pristine, tmp_path, data) -> None:
    exchange = fresh(pristine, tmp_path, "cut")
    path = exchange.updates / "m-r1.npz"
    raw = path.read_bytes()
    path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="length")])
    assert check_round(exchange) == "rejected"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = (
    "device_id",
    "client_id",
    "round_index",
    "num_examples",
    "num_steps",
    "train_loss",
    "model_version",
    "base_version",
)


@HOSTILE
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=3),
    drop=st.sets(st.sampled_from(FIELDS), max_size=2),
)
def test_random_headers_are_judged_one_file_at_a_time(pristine, tmp_path, changes, drop) -> None:
    exchange = fresh(pristine, tmp_path, "hdr")
    header = header_of(TASK, "m", **changes)
    for key in drop:
        header.pop(key, None)
    write_update(exchange.updates / "m-r1.npz", header, honest_update(3).delta)
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    got = dict(accepted)
    assert {"a-r1.npz", "b-r1.npz", "c-r1.npz"} <= set(got)
    if "m-r1.npz" in got:  # then the header was a valid one
        n, loss = header["num_examples"], header.get("train_loss")
        assert type(n) is int and 1 <= n <= DEVICES["m"]
        assert loss is None or (type(loss) in (int, float) and math.isfinite(loss))
        assert header["round_index"] == 1 and type(header["round_index"]) is int
        assert header["base_version"] == TASK.base_version
    else:
        assert dict(rejected)["m-r1.npz"].startswith("m-r1.npz: ")


@HOSTILE
@given(header=JSON)
def test_a_header_that_is_not_an_object_is_refused(pristine, tmp_path, header) -> None:
    exchange = fresh(pristine, tmp_path, "nonobj")
    write_update(exchange.updates / "m-r1.npz", header)
    assert check_round(exchange) == "rejected"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (10**9, r"num_examples must be in \[1, 40\], got 1000000000"),
        (41, r"num_examples must be in \[1, 40\], got 41"),
        (float("inf"), "num_examples must be an integer, got inf"),  # 1e400 in JSON
        (True, "num_examples must be an integer, got True"),
        (float("nan"), "num_examples must be an integer, got nan"),
        (2.5, "num_examples must be an integer, got 2.5"),
        ("20", "num_examples must be an integer, got '20'"),
        (0, r"num_examples must be in \[1, 40\], got 0"),
        (None, "num_examples must be an integer, got None"),
    ],
)
def test_num_examples_must_be_an_integer_within_the_devices_cap(tmp_path, value, reason) -> None:
    exchange = exchange_with(tmp_path, TASK, devices="abc")
    write_update(exchange.updates / "m-r1.npz", header_of(TASK, "m", num_examples=value))
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    assert sorted(dict(accepted)) == ["a-r1.npz", "b-r1.npz", "c-r1.npz"]
    assert rejected and rejected[0][0] == "m-r1.npz"
    assert re.search(reason, rejected[0][1]), rejected


def test_num_examples_written_as_1e400_is_refused(tmp_path) -> None:
    exchange = exchange_with(tmp_path, TASK, devices="abc")
    text = json.dumps(header_of(TASK, "m")).replace('"num_examples": 20', '"num_examples": 1e400')
    arrays = {f"d{i:03d}": d for i, d in enumerate(honest_update(9).delta)}
    arrays["header"] = np.array(text)
    (exchange.updates / "m-r1.npz").write_bytes(_npz_bytes(arrays))
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    assert len(accepted) == 3
    assert dict(rejected)["m-r1.npz"].endswith("num_examples must be an integer, got inf")


@pytest.mark.parametrize(
    ("loss", "reason"),
    [
        ("0.3", "metric 'train_loss' must be a finite number, got '0.3'"),
        (True, "metric 'train_loss' must be a finite number, got True"),
        ([1], "metric 'train_loss' must be a finite number, got [1]"),
    ],
)
def test_a_text_train_loss_rejects_that_update_only(tmp_path, loss, reason) -> None:
    exchange = exchange_with(tmp_path, TASK, devices="abc")
    write_update(exchange.updates / "m-r1.npz", header_of(TASK, "m", train_loss=loss))
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    assert len(accepted) == 3 and rejected == [("m-r1.npz", f"m-r1.npz: {reason}")]


@pytest.mark.parametrize("scale", [1e30, 3e38])
def test_huge_deltas_are_rejected_by_the_norm_bound(tmp_path, scale) -> None:
    exchange = exchange_with(tmp_path, TASK, devices="abc")
    delta = tuple(np.full(s, scale, np.float32) for s in SHAPES)
    write_update(exchange.updates / "m-r1.npz", header_of(TASK, "m"), delta)
    accepted, rejected = exchange.collect(TASK, devices=DEVICES)
    assert len(accepted) == 3
    assert "exceeds the bound" in dict(rejected)["m-r1.npz"] and "rejected" in rejected[0][1]


def test_stale_duplicate_unknown_and_relabelled_updates_are_refused(tmp_path) -> None:
    last = make_task(round_index=0, weights=tuple(w - 0.01 for w in TASK.weights))
    exchange = exchange_with(tmp_path, TASK, devices="ab")
    # last round's file, renamed and relabelled as this round's (header edited too)
    write_update(exchange.updates / "c-r1.npz", header_of(last, "c", round_index=1))
    # a device that was not asked this round
    exchange.submit("intruder", TASK, honest_update(5))
    # the same device twice (one file name per device; the other case on a FAT stick)
    exchange.submit("B", TASK, honest_update(6))
    # an update for another kit's model
    write_update(exchange.updates / "m-r1.npz", header_of(TASK, "m", model_version="kit-v0"))
    accepted, rejected = exchange.collect(TASK, devices={**DEVICES, "B": 40})
    reasons = dict(rejected)
    assert [name for name, _ in accepted] == ["a-r1.npz"]
    assert "header 'base_version'" in reasons["c-r1.npz"] and "stale" in reasons["c-r1.npz"]
    assert "not asked for an update this round (unknown sender)" in reasons["intruder-r1.npz"]
    assert "sent 2 updates this round; all are refused (duplicate)" in reasons["b-r1.npz"]
    assert "duplicate" in reasons["B-r1.npz"]
    assert "header 'model_version' is 'kit-v0'" in reasons["m-r1.npz"]
    # renamed without editing the header: the name and the header disagree
    os.replace(exchange.updates / "a-r1.npz", exchange.updates / "m-r1.npz")
    _, rejected = exchange.collect(TASK, devices=DEVICES)
    assert "header does not match the file name" in dict(rejected)["m-r1.npz"]


def test_a_task_carries_its_model_version_and_weights_hash() -> None:
    with pytest.raises(ValueError, match="model_version must be the kit's model version"):
        type(TASK)(TASK.plan, TASK.weights, "")
    with pytest.raises(ValueError, match="base_version 'x' does not match the weights"):
        type(TASK)(TASK.plan, TASK.weights, TASK.model_version, "x")
    other = make_task(weights=tuple(w + 1 for w in TASK.weights))
    assert other.base_version != TASK.base_version and len(TASK.base_version) == 32


def test_read_update_names_the_file(tmp_path) -> None:
    exchange = exchange_with(tmp_path, TASK, devices="a")
    with pytest.raises(UpdateRejected, match="a-r1.npz: not an update of round 2"):
        FileTransport.read_update(exchange.updates / "a-r1.npz", make_task(round_index=2))
