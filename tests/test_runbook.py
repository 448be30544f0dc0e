"""The papermill runner: failures are reported, never hidden; the report is written."""

from __future__ import annotations

from pathlib import Path

import nbformat

from fedlab.runbook import execute_notebook, render_report, summary_table


def write_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SMOKE: bool = False\nRESULTS_PATH: str = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


def test_results_error_and_report(tmp_path: Path) -> None:
    good = write_notebook(
        tmp_path / "01_good.ipynb",
        "from fedlab.notebook import Recorder\nrec = Recorder(RESULTS_PATH)\n"
        "rec.record('smoke', SMOKE)\nrec.headline('answer', 42.0, unit='units')",
    )
    bad = write_notebook(
        tmp_path / "02_bad.ipynb",
        "from fedlab.notebook import Recorder\nRecorder(RESULTS_PATH).record('before', 1)\n"
        "raise ValueError('broken cell')",
    )
    out = tmp_path / "out"
    ok_run = execute_notebook(good, out, smoke=True)
    bad_run = execute_notebook(bad, out, smoke=True)
    assert ok_run.ok and ok_run.results["smoke"] is True
    assert ok_run.headline == "answer = 42 units"
    assert not bad_run.ok and "ValueError: broken cell" in bad_run.error
    assert bad_run.results == {"before": 1}  # what was recorded before the error survives
    index = render_report([ok_run, bad_run], tmp_path / "report")
    html = index.read_text()
    assert "01_good.html" in html and "FAILED" in html and "broken cell" in html
    assert (tmp_path / "report" / "01_good.html").stat().st_size > 1000
    table = summary_table([ok_run, bad_run])
    assert "01_good" in table and "FAILED" in table and "broken cell" in table


def test_kernel_talks_over_private_unix_sockets(tmp_path: Path, capfd) -> None:
    nb = write_notebook(
        tmp_path / "01_transport.ipynb",
        "from fedlab.notebook import Recorder\nimport json, os\n"
        "from ipykernel.connect import get_connection_file\n"
        "info = json.load(open(get_connection_file()))\n"
        "rec = Recorder(RESULTS_PATH)\n"
        "rec.record('transport', info['transport'])\n"
        "rec.record('socket_dir', os.path.dirname(info['ip']))",
    )
    run = execute_notebook(nb, tmp_path / "out", smoke=True)
    assert run.ok, run.error
    assert run.results["transport"] == "ipc"
    assert not Path(run.results["socket_dir"]).exists()  # removed with the run
    assert "without encryption" not in capfd.readouterr().err


def test_a_timed_out_notebook_is_reported_and_the_rest_still_run(tmp_path: Path, capsys) -> None:
    """A cell over the timeout is a failed notebook with its cell, error and time; the next
    notebook runs, the report is written, and the exit status says something failed."""
    from fedlab.runbook import main

    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_slow.ipynb", "import time\ntime.sleep(60)")
    write_notebook(
        folder / "02_after.ipynb",
        # fedlab.federated.FallbackWarning without importing TensorFlow in a 3 s budget
        "import warnings\nclass FallbackWarning(UserWarning): pass\n"
        "from fedlab.notebook import Recorder\n"
        "warnings.warn('fedlab: 3 clients retried on the reference runtime', FallbackWarning)\n"
        "Recorder(RESULTS_PATH).headline('after', 1.0)",
    )
    out = tmp_path / "build"
    code = main(["--smoke", "--notebooks", str(folder), "--out", str(out), "--cell-timeout", "3"])
    printed = capsys.readouterr().out
    assert code == 1
    index = (out / "report" / "index.html").read_text()
    assert "01_slow" in index and "02_after" in index
    assert "FAILED" in index and "CellTimeoutError" in index
    assert "cell 3:" in index  # after papermill's injected-parameters cell and ours
    assert (out / "report" / "02_after.html").is_file()
    assert "after = 1" in index  # the notebook after the failure ran and recorded
    assert "3 clients retried on the reference runtime" in index  # the fallback is loud
    assert "CellTimeoutError" in printed and "⚠ fedlab: 3 clients retried" in printed
    assert index.count("⚠") == 1  # said once


def test_headless_parameters_press_notebook_03s_buttons(tmp_path: Path) -> None:
    """Notebook 03 waits for clicks by default; run headless, it autoplays (and a caller's
    own parameters still win)."""
    from fedlab.runbook import HEADLESS_PARAMETERS

    assert HEADLESS_PARAMETERS["03_live_federated_rounds"] == {"AUTOPLAY": True}
    body = (
        "from fedlab.notebook import Recorder\nRecorder(RESULTS_PATH).record('autoplay', AUTOPLAY)"
    )
    nb = write_notebook(tmp_path / "03_live_federated_rounds.ipynb", body)
    source = nb.read_text().replace(
        'RESULTS_PATH: str = \\"\\"', 'RESULTS_PATH: str = \\"\\"\\nAUTOPLAY: bool = False'
    )
    nb.write_text(source)
    assert execute_notebook(nb, tmp_path / "a", smoke=True).results == {"autoplay": True}
    chosen = execute_notebook(nb, tmp_path / "b", smoke=True, parameters={"AUTOPLAY": False})
    assert chosen.results == {"autoplay": False}


def test_cell_progress_bar_goes_to_the_stream_given(tmp_path: Path) -> None:
    import io

    nb = write_notebook(tmp_path / "01_bar.ipynb", "x = 1")
    stream = io.StringIO()
    run = execute_notebook(nb, tmp_path / "out", smoke=True, progress_bar=stream)
    assert run.ok, run.error
    assert "01_bar" in stream.getvalue() and "cell" in stream.getvalue()


def test_progress_bar_only_on_a_terminal() -> None:
    import io
    import os

    from fedlab.runbook import wants_progress_bar

    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as tty:
            assert wants_progress_bar(tty) is True
    finally:
        os.close(leader)
    assert wants_progress_bar(io.StringIO()) is False
    closed = io.StringIO()
    closed.close()
    assert wants_progress_bar(closed) is False


def test_main_draws_no_bar_into_a_pipe_and_takes_a_log_level(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import logging

    from fedlab.runbook import main

    fedlab_logger = logging.getLogger("fedlab")  # main configures it: undo that afterwards
    monkeypatch.setattr(fedlab_logger, "handlers", list(fedlab_logger.handlers))
    monkeypatch.setattr(fedlab_logger, "level", fedlab_logger.level)
    monkeypatch.setattr(fedlab_logger, "propagate", fedlab_logger.propagate)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_one.ipynb", "x = 1")
    code = main(["--smoke", "--notebooks", str(folder), "--out", str(tmp_path / "b"),
                 "--log-level", "info"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert "Executing" not in captured.out and "cell/s" not in captured.out  # not a TTY here
    assert "INFO fedlab.runbook: executing 01_one.ipynb (smoke)" in captured.err
    assert "01_one.ipynb finished in" in captured.err
