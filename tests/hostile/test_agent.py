"""Item 7: the device agent never dies with a traceback. A bad task is exit 6 with a message
(and with --loop it keeps polling); bad local data is exit 4; CSV headers are declared."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedlab.edge.agent import main
from fedlab.edge.transport import TASK_FILE, FileTransport
from fedlab.federated import ClientPlan
from fedlab.protocol import KIND_TASK, RoundTask, encode, unpack_frame
from tests.hostile.conftest import raw_frame

PLAN = {"client_id": 3, "round_index": 0, "epochs": 1, "batch_size": 16, "learning_rate": 0.05}


def device(folder: Path, kit, data: str = "data.npz", **overrides) -> Path:
    """A device folder with device.json; local data is 40 random digit-like examples."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8, 8, 1), np.float32), rng.integers(0, 10, 40)
    np.savez(folder / "data.npz", x=x, y=y)
    config = {
        "device_id": "pi-3",
        "kit_dir": str(kit["folder"]),
        "data_path": data,
        "trusted_key": kit["key"],
        "transport": {"kind": "files", "folder": "exchange"},
        **overrides,
    }
    path = folder / "device.json"
    path.write_text(json.dumps(config))
    return path


def write_task(folder: Path, weights, header: dict | str) -> None:
    """A task file with any header (bypassing RoundTask's own checks, as a hostile writer
    would): JSON text as given, ``Infinity`` included, and a correct checksum."""
    text = header if isinstance(header, str) else json.dumps(header)
    (folder / "exchange").mkdir(parents=True, exist_ok=True)
    (folder / "exchange" / TASK_FILE).write_bytes(raw_frame(KIND_TASK, text, weights))


def good_task(kit, **plan) -> RoundTask:
    weights = tuple(np.asarray(w, np.float32) for w in kit["weights"])
    version = kit["manifest"].info["model"]["version"]
    return RoundTask.from_client_plan(
        ClientPlan(**{**PLAN, **plan}), model_version=version, weights=weights
    )


def good_header(kit, **plan) -> dict:
    """The header of an honest task frame (its plan a plain dict to edit)."""
    return unpack_frame(encode(good_task(kit, **plan))).header


def run(config: Path, capsys) -> tuple[int, str]:
    code = main(["--config", str(config)])
    return code, capsys.readouterr().err


BAD_TASKS = {
    "seed='abc'": ({"seed": "abc"}, "seed must be an int, got 'abc'"),
    "epochs=2.5": ({"epochs": 2.5}, "epochs must be an int, got 2.5"),
    "batch_size='16'": ({"batch_size": "16"}, "batch_size must be an int, got '16'"),
    "batch_size=true": ({"batch_size": True}, "batch_size must be an int, got True"),
    "learning_rate=Infinity": (
        {"learning_rate": math.inf},
        "learning_rate must be a finite number > 0, got inf",
    ),
    "optimizer=adam": (
        {"optimizer": {"name": "adam"}},
        "optimizer 'adam' does not run on the device",
    ),
    "optimizer=rmsprop": (
        {"optimizer": {"name": "rmsprop"}},
        "optimizer must be one of ('sgd', 'momentum', 'adam'), got 'rmsprop'",
    ),
    "optimizer as text": ({"optimizer": "adam"}, "optimizer must be an object, got 'adam'"),
    "batch over the model's": ({"batch_size": 64}, "exceeds the model's static batch 16"),
    "unknown field": ({"colour": "red"}, "unknown plan fields ['colour']"),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_a_task_with_bad_values_is_exit_6_with_a_message(agent_kit, tmp_path, capsys, case) -> None:
    plan, message = BAD_TASKS[case]
    config = device(tmp_path, agent_kit)
    header = good_header(agent_kit)
    header["plan"].update(plan)
    write_task(tmp_path, agent_kit["weights"], header)
    code, err = run(config, capsys)
    assert code == 6 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_version": None}, "model_version must be the kit's model version"),
        ({"model_version": "0" * 64}, "install the matching kit"),
        ({"base_version": "f" * 32}, "does not match the weights"),
        ({"plan": "nonsense"}, "the header has no plan"),
    ],
)
def test_a_stale_foreign_or_damaged_task_is_exit_6(
    agent_kit, tmp_path, capsys, change, message
) -> None:
    config = device(tmp_path, agent_kit)
    write_task(tmp_path, agent_kit["weights"], {**good_header(agent_kit), **change})
    code, err = run(config, capsys)
    assert code == 6 and message in err, err


def test_a_task_whose_header_is_not_json_is_exit_6(agent_kit, tmp_path, capsys) -> None:
    config = device(tmp_path, agent_kit)
    write_task(tmp_path, agent_kit["weights"], "{not json")
    code, err = run(config, capsys)
    assert code == 6 and "not a valid task (header is not valid JSON (JSONDecodeError" in err


def test_a_good_hand_written_task_is_trained(agent_kit, tmp_path, capsys) -> None:
    """write_task's frames are well formed: the refusals above are about their headers."""
    config = device(tmp_path, agent_kit)
    write_task(tmp_path, agent_kit["weights"], good_header(agent_kit))
    code, err = run(config, capsys)
    assert code == 0, err
    assert (tmp_path / "exchange" / "updates" / "pi-3-r0.flab").is_file()


def test_a_damaged_task_file_is_exit_6(agent_kit, tmp_path, capsys) -> None:
    config = device(tmp_path, agent_kit)
    data = bytearray(encode(good_task(agent_kit)))
    data[len(data) // 2] ^= 0x10
    (tmp_path / "exchange").mkdir(parents=True, exist_ok=True)
    (tmp_path / "exchange" / TASK_FILE).write_bytes(bytes(data))
    code, err = run(config, capsys)
    assert code == 6 and "not a valid task (damaged: checksum mismatch)" in err, err
    (tmp_path / "exchange" / TASK_FILE).write_bytes(bytes(data[:100]))
    code, err = run(config, capsys)
    assert code == 6 and "not a valid task (truncated or damaged" in err, err


def local_data_cases(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (file, expected message) for damaged or ambiguous local data."""
    rows = np.hstack([np.ones((4, 64)), np.arange(4)[:, None]])
    np.savetxt(
        folder / "header.csv", rows, delimiter=",", header="f" + ",f" * 63 + ",label", comments=""
    )
    (folder / "empty.npz").write_bytes(b"")
    np.savez(folder / "whole.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4))
    whole = (folder / "whole.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    np.savez(folder / "pickled.npz", x=np.array([{"evil": 1}] * 4, dtype=object), y=np.zeros(4))
    (folder / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (folder / "nul.csv").write_bytes(b"\x00" * 100)
    (folder / "empty.csv").write_text("")
    return {
        "empty .npz": ("empty.npz", "not a readable .npz"),
        "truncated .npz": ("truncated.npz", "not a readable .npz"),
        "pickled .npz": ("pickled.npz", "Object arrays cannot be loaded"),
        "binary CSV": ("binary.csv", "not a numeric CSV"),
        "NUL CSV": ("nul.csv", "not a numeric CSV"),
        "empty CSV": ("empty.csv", "no rows"),
        "undeclared header": ("header.csv", "a header row must be declared"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty .npz",
        "truncated .npz",
        "pickled .npz",
        "binary CSV",
        "NUL CSV",
        "empty CSV",
        "undeclared header",
    ],
)
def test_bad_local_data_is_exit_4(agent_kit, tmp_path, capsys, case) -> None:
    file, message = local_data_cases(tmp_path)[case]
    config = device(tmp_path, agent_kit, data=file)
    code, err = run(config, capsys)
    assert code == 4 and "local data refused" in err and message in err, err


def test_a_declared_csv_header_is_skipped(agent_kit, tmp_path, capsys) -> None:
    local_data_cases(tmp_path)
    config = device(tmp_path, agent_kit, data="header.csv", csv_header=True)
    code, err = run(config, capsys)
    assert code == 0 and "no task" in err, err
    bad = device(tmp_path / "b", agent_kit, csv_header="yes")
    code, err = run(bad, capsys)
    assert code == 2 and "field 'csv_header' must be true or false, got 'yes'" in err


def test_the_looping_agent_reports_a_bad_task_and_keeps_polling(agent_kit, tmp_path) -> None:
    config = device(tmp_path, agent_kit)
    header = good_header(agent_kit)
    header["plan"]["seed"] = "abc"
    write_task(tmp_path, agent_kit["weights"], header)
    err = tmp_path / "stderr.txt"
    with err.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedlab.edge.emulate",
                "fedlab.edge.agent",
                "--config",
                str(config),
                "--loop",
                "--interval",
                "0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    try:
        update = tmp_path / "exchange" / "updates" / "pi-3-r0.flab"
        deadline = time.monotonic() + 60
        while "seed must be an int, got 'abc'" not in err.read_text():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        assert proc.poll() is None  # still polling after the bad task
        good = good_task(agent_kit)
        FileTransport(tmp_path / "exchange").publish(good)
        while not update.exists():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        assert "Traceback" not in err.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    accepted, rejected = FileTransport(tmp_path / "exchange").collect(good, devices={"pi-3": 40})
    assert rejected == [] and [name for name, _ in accepted] == ["pi-3-r0.flab"]
