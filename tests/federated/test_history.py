from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from fedlab.federated import History, RoundResult


def result(i: int, acc: float = math.nan) -> RoundResult:
    return RoundResult(
        round_index=i,
        selected=(1, 2, 3),
        completed=(1, 3),
        dropped=(2,),
        failed=(),
        rejected=((3, "tensor 0 has shape (7,)"),) if i == 1 else (),
        num_examples=40,
        train_loss=0.5,
        test_accuracy=acc,
        bytes_up=100,
        bytes_down=300,
        sim_time_s=2.0,
        wall_time_s=0.1,
    )


def test_append_series_and_summaries() -> None:
    h = History().append(result(0, 0.5)).append(result(1)).append(result(2, 0.8))
    assert len(h) == 3
    assert h.series("completed").tolist() == [2, 2, 2]
    assert h.best_accuracy() == 0.8 and h.last_accuracy() == 0.8
    assert h.rounds_to_accuracy(0.7) == 3 and h.rounds_to_accuracy(0.9) is None
    assert h.totals()["bytes_up"] == 300
    with pytest.raises(ValueError, match="does not follow"):
        h.append(result(1))
    with pytest.raises(ValueError, match="no field 'accuracy'"):
        h.series("accuracy")


def test_records_round_trip_and_json_has_no_nan() -> None:
    h = History().append(result(0, 0.5)).append(result(1))
    again = History.from_records(h.to_records())
    assert again.deterministic_records() == h.deterministic_records()
    data = json.loads(h.to_json())
    assert data[1]["test_accuracy"] is None
    assert data[1]["rejected"] == [[3, "tensor 0 has shape (7,)"]]


def test_csv_export(tmp_path) -> None:
    h = History().append(result(0, 0.5)).append(result(1, 0.6))
    path = tmp_path / "h.csv"
    text = h.to_csv(path)
    assert path.read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[1]["test_accuracy"] == "0.6" and rows[1]["n_rejected"] == "1"
    assert rows[0]["n_dropped"] == "1"


def test_nan_is_kept_in_memory() -> None:
    h = History().append(result(0))
    assert np.isnan(h.series("test_accuracy")[0]) and math.isnan(h.best_accuracy())


def test_stage_bytes_and_refusals_are_exported() -> None:
    from dataclasses import replace

    a = replace(result(0, 0.5), stage_bytes=(("update", 400), ("encode", 12)))
    b = replace(
        result(1, 0.6),
        stage_bytes=(("update", 400), ("encode", 10)),
        stage_rejections=(("decode", 1),),
    )
    h = History().append(a).append(b)
    assert h.stage_names() == ("update", "encode")
    assert h.stage_bytes("encode").tolist() == [12, 10]
    with pytest.raises(ValueError, match="no client stage 'clip'"):
        h.stage_bytes("clip")
    rows = list(csv.DictReader(io.StringIO(h.to_csv())))
    assert [r["bytes_after_encode"] for r in rows] == ["12", "10"]
    assert [r["rejected_by_decode"] for r in rows] == ["0", "1"]
    again = History.from_records(json.loads(h.to_json()))
    assert again.stage_bytes("update").tolist() == [400, 400]
