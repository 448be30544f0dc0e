"""Execute the notebook sequence with papermill, render HTML, and summarize.

``python -m fedlab.runbook`` (or ``fedlab-runbook``) is ``make run``'s main job; the notebook
tests call :func:`execute_notebook` with ``smoke=True``. On a terminal, papermill's cell
progress bar shows what each notebook is doing; in a log file or a pipe it stays quiet.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fedlab.log import add_log_level_argument, configure_logging, get_logger

__all__ = [
    "HEADLESS_PARAMETERS",
    "NotebookRun",
    "discover_notebooks",
    "execute_notebook",
    "main",
    "render_report",
    "wants_progress_bar",
]

ROOT = Path(__file__).resolve().parent.parent
_log = get_logger("fedlab.runbook")  # not __name__: it is "__main__" under python -m

# Parameters a notebook gets when it runs headless (papermill: `make run` and the tests),
# under the caller's own. Notebook 03 waits for a learner's clicks by default; headless,
# nobody clicks, so it presses its dashboard's buttons itself.
HEADLESS_PARAMETERS: dict[str, dict[str, Any]] = {
    "03_live_federated_rounds": {"AUTOPLAY": True},
}


@dataclass(frozen=True, slots=True)
class NotebookRun:
    """The outcome of executing one notebook."""

    name: str
    ok: bool
    seconds: float
    output: Path
    results: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    notes: tuple[str, ...] = ()  # what the run said that a reader must not miss (fallbacks)

    @property
    def headline(self) -> str:
        """``"name = value unit"`` from the notebook's recorded headline, or ``""``."""
        head = self.results.get("headline")
        if not isinstance(head, dict):
            return ""
        value = head.get("value")
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f"{head.get('name', '')} = {shown} {head.get('unit', '')}".strip()


def discover_notebooks(folder: str | Path = ROOT / "notebooks") -> list[Path]:
    """Numbered notebooks (``NN_topic.ipynb``) in order."""
    found = sorted(p for p in Path(folder).glob("*.ipynb") if p.name[:2].isdigit())
    if not found:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {folder}")
    return found


def _ipc_kernel_manager(socket_dir: str) -> type:
    """A kernel manager talking to its kernel over Unix sockets in ``socket_dir``.

    The default is plain-text TCP on localhost, reachable by any local user and announced
    by ipykernel with a warning on every start; a private socket folder per run is neither.
    """
    from jupyter_client.manager import AsyncKernelManager

    prefix = str(Path(socket_dir) / "kernel")

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(transport="ipc", ip=prefix, **kwargs)

    return IPCKernelManager


def execute_notebook(
    notebook: str | Path,
    out_dir: str | Path,
    *,
    smoke: bool,
    parameters: dict[str, Any] | None = None,
    timeout_s: int = 3600,
    progress_bar: bool | TextIO = False,
) -> NotebookRun:
    """Execute ``notebook`` into ``out_dir`` with papermill.

    The notebook receives ``SMOKE`` and ``RESULTS_PATH`` (``out_dir/<name>.results.json``),
    its :data:`HEADLESS_PARAMETERS`, then ``parameters``. ``progress_bar`` is False (quiet),
    True (papermill's cell bar on stderr) or a stream to draw the bar on.

    A cell error, a cell that runs longer than ``timeout_s`` or a kernel that dies is
    captured in ``NotebookRun.error`` with the cell and the time (the executed notebook keeps
    what ran), never hidden and never raised: ``ok`` is False, and the caller goes on with
    the next notebook. Fallback warnings the cells printed become ``NotebookRun.notes``.
    """
    import papermill as pm

    src = Path(notebook)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / src.name
    results_path = out / f"{src.stem}.results.json"
    results_path.unlink(missing_ok=True)
    params = {
        "SMOKE": smoke,
        "RESULTS_PATH": str(results_path.resolve()),
        **HEADLESS_PARAMETERS.get(src.stem, {}),
        **(parameters or {}),
    }
    bar: bool | dict[str, Any] = (
        progress_bar
        if isinstance(progress_bar, bool)
        else {
            "file": progress_bar,
            "desc": src.stem,
            "leave": False,
        }
    )
    _log.info("executing %s (%s) with %s", src.name, "smoke" if smoke else "full", params)
    start = time.perf_counter()
    error = ""
    with tempfile.TemporaryDirectory(prefix="fedlab-kernel-") as sockets:
        try:
            pm.execute_notebook(
                str(src),
                str(executed),
                parameters=params,
                cwd=str(src.parent),
                kernel_name="python3",
                progress_bar=bar,
                execution_timeout=timeout_s,
                kernel_manager_class=_ipc_kernel_manager(sockets),
            )
        except pm.PapermillExecutionError as exc:
            error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        except Exception as exc:  # a timeout or a dead kernel: record it, run the rest
            where = _running_cell(executed)
            error = f"{where}{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    seconds = time.perf_counter() - start
    if error:
        error = f"{error} (after {seconds:.0f} s)"
        _log.info("%s failed: %s", src.name, error)
    else:
        _log.info("%s finished in %.1f s", src.name, seconds)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return NotebookRun(
        src.stem, not error, seconds, executed, results, error, _fallback_notes(executed)
    )


def _cells(executed: Path) -> list[Any]:
    import nbformat

    if not executed.is_file():
        return []
    try:
        return list(nbformat.read(str(executed), as_version=4).cells)
    except (OSError, ValueError):  # a half-written notebook: no cells to report from
        return []


def _running_cell(executed: Path) -> str:
    """``"cell N: "`` for the cell papermill was executing when the run stopped."""
    started = [
        (i, c)
        for i, c in enumerate(_cells(executed))
        if c.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return ""
    index, cell = started[-1]
    return f"cell {cell.get('execution_count') or index + 1}: "


def _fallback_notes(executed: Path) -> tuple[str, ...]:
    """The distinct fallback warnings the notebook's cells printed (the fast runtime could
    not train and the reference one did: correct, slower, and worth saying)."""
    notes: list[str] = []
    for cell in _cells(executed):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else ""
            for line in str(text).splitlines():
                # "path:line: FallbackWarning: message" (not the source line printed after it)
                found = re.search(r":\d+: FallbackWarning: (.+)", line)
                if found and found.group(1).strip() not in notes:
                    notes.append(found.group(1).strip())
    return tuple(notes)


def render_report(runs: Sequence[NotebookRun], report_dir: str | Path) -> Path:
    """HTML of every executed notebook plus an ``index.html`` linking them."""
    from nbconvert import HTMLExporter

    report = Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    rows = []
    for run in runs:
        page = f"{run.name}.html"
        if run.output.is_file():
            body, _ = exporter.from_filename(str(run.output))
            (report / page).write_text(body)
        status = "ok" if run.ok else f"FAILED — {html.escape(run.error)}"
        status += "".join(f"<br>⚠ {html.escape(note)}" for note in run.notes)
        rows.append(
            f"<tr><td><a href='{page}'>{html.escape(run.name)}</a></td><td>{status}</td>"
            f"<td>{run.seconds:.1f} s</td><td>{html.escape(run.headline)}</td></tr>"
        )
    index = report / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>fedlab report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;text-align:left}"
        "</style></head><body><h1>fedlab notebook report</h1>"
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"
        "<table><tr><th>notebook</th><th>status</th><th>time</th><th>headline</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return index


def summary_table(runs: Sequence[NotebookRun]) -> str:
    """Fixed-width text table: notebook, status, time, headline metric."""
    width = max(len("notebook"), *(len(r.name) for r in runs))
    lines = [f"{'notebook':<{width}}  status  time      headline"]
    for run in runs:
        status = "ok" if run.ok else "FAILED"
        lines.append(f"{run.name:<{width}}  {status:<6}  {run.seconds:7.1f}s  {run.headline}")
        if run.error:
            lines.append(f"{'':<{width}}  └ {run.error}")
        for note in run.notes:
            lines.append(f"{'':<{width}}  ⚠ {note}")
    return "\n".join(lines)


def wants_progress_bar(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal (not a pipe, file or CI log)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: execute the sequence, render the report, print the summary."""
    parser = argparse.ArgumentParser(prog="fedlab-runbook", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny, fast runs (as CI does)")
    parser.add_argument("--out", default=str(ROOT / "build"), help="output folder (default build/)")
    parser.add_argument(
        "--only", nargs="*", default=None, help="notebook names to run (default all)"
    )
    parser.add_argument(
        "--notebooks", default=str(ROOT / "notebooks"), help="folder of NN_*.ipynb notebooks"
    )
    parser.add_argument(
        "--cell-timeout",
        type=int,
        default=3600,
        help="seconds one cell may run before its notebook is recorded as failed (default 3600)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="papermill's cell progress bar: auto shows it when stdout is a terminal",
    )
    add_log_level_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if args.cell_timeout < 1:
        parser.error(f"--cell-timeout must be >= 1, got {args.cell_timeout}")
    out = Path(args.out)
    notebooks = discover_notebooks(args.notebooks)
    if args.only:
        notebooks = [n for n in notebooks if n.stem in args.only or n.name in args.only]
        if not notebooks:
            parser.error(f"no notebook matches {args.only}")
    show = args.progress == "on" or (args.progress == "auto" and wants_progress_bar(sys.stdout))
    # The bar goes to stdout, the terminal: `make run` filters stderr line by line, which
    # would hold back a bar that redraws with carriage returns until the notebook ends.
    progress: bool | TextIO = sys.stdout if show else False
    runs = []
    for notebook in notebooks:
        print(f"running {notebook.name} ({'smoke' if args.smoke else 'full'}) …", flush=True)
        run = execute_notebook(
            notebook,
            out / "notebooks",
            smoke=args.smoke,
            timeout_s=args.cell_timeout,
            progress_bar=progress,
        )
        runs.append(run)
        if not run.ok:
            print(f"  FAILED: {run.error}", flush=True)
    index = render_report(runs, out / "report")
    print()
    print(summary_table(runs))
    print(f"\nreport: {index}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
