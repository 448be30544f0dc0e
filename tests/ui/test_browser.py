"""The dashboard as a person uses it: JupyterLab in headless Chromium, driven by Playwright.

JupyterLab runs on a free localhost port with a token, a temporary root folder and private
config/runtime folders; notebook 03 is opened, all its cells run, Start is clicked, and the
test waits for the accuracy plot to draw three rounds, pauses, and checks that no further
round arrives. A second test opens notebook 00 and the notebook index
(``notebooks/README.md``) as a newcomer would. JavaScript errors in the page fail both
tests. Screenshots are kept in ``build/artifacts/``.

Chromium is Debian's package (Playwright cannot download browsers here): where it or
Playwright is missing the tests skip and say how to install them, except under ``CI=true``,
where a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system_tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "03_live_federated_rounds.ipynb"
QUICKSTART = ROOT / "notebooks" / "00_quickstart.ipynb"
INDEX = ROOT / "notebooks" / "README.md"
ARTIFACTS = ROOT / "build" / "artifacts"
CHROMIUM = os.environ.get("FEDLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
# Plugins that reach for the internet (news, PyPI extension listing) are off: no network here.
DISABLED_PLUGINS = {
    "@jupyterlab/apputils-extension:announcements": True,
    "@jupyterlab/extensionmanager-extension:plugin": True,
}

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepared_notebook(folder: Path) -> Path:
    """Notebook 03 with parameters for an interactive run: no autoplay, many rounds, small
    fleet, written the way papermill would inject them."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(NOTEBOOK))
    nb = parameterize_notebook(
        nb,
        {"AUTOPLAY": False, "NUM_DEVICES": 30, "CLIENTS_PER_ROUND": 6, "ROUNDS": 10_000,
         "DP_ROUNDS": 3, "EXPORT_DIR": str(folder / "exports")},
    )  # fmt: skip
    target = folder / NOTEBOOK.name
    nbformat.write(nb, target)
    return target


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """JupyterLab on a temporary root holding notebook 03 (prepared), notebook 00 and the
    notebook index; yields the URL of notebook 03 (with its token) and the temporary folder."""
    if not Path(CHROMIUM).is_file():
        missing_tool(
            f"Chromium ({CHROMIUM})",
            "`make test` installs Debian's chromium (apt-get install chromium), "
            "or point FEDLAB_CHROMIUM at a Chromium binary",
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing_tool("playwright", "install the dev extra (pip install -e '.[dev]')")
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "root"
    root.mkdir()
    _prepared_notebook(root)
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    shutil.copy(INDEX, root / INDEX.name)
    config = tmp_path / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": DISABLED_PLUGINS})
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
         "--ServerApp.port_retries=0", *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()
                    )
                time.sleep(0.3)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", tmp_path
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# Browser-side clock: pointerdown on a dashboard button, and the first time the status line
# shows each state, both in performance.now() milliseconds.
CLOCK = """() => {
  window.__flClock = {};
  const clock = window.__flClock;
  document.addEventListener('pointerdown', (e) => {
    const b = e.target.closest('.fl-dashboard button');
    if (b) for (const c of b.classList) if (c.startsWith('fl-')) clock[c] = performance.now();
  }, true);
  const status = document.querySelector('.fl-dashboard .fl-status');
  new MutationObserver(() => {
    const state = status.querySelector('.fl-state');
    const t = state && state.textContent.trim();
    if (t && !(t in clock)) clock[t] = performance.now();
  }).observe(status, {subtree: true, childList: true, characterData: true});
}"""


def _rounds(page) -> int:
    text = page.locator(".fl-dashboard").first.locator(".fl-status .fl-rounds").inner_text()
    return int(text)


def _plotted_points(page) -> int:
    """Points on the accuracy line as drawn in the SVG (bqplot draws 'M x,y L x,y …')."""
    d = page.locator(".fl-dashboard").first.locator(".fl-accuracy-plot path.line").first
    path = d.get_attribute("d") or ""
    return len(re.findall(r"[ML]", path))


def test_dashboard_runs_and_pauses_in_a_real_browser(jupyterlab) -> None:
    from playwright.sync_api import sync_playwright

    url, tmp_path = jupyterlab
    errors: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on(
                "console",
                lambda msg: (
                    errors.append(f"console.{msg.type}: {msg.text}")
                    if msg.type == "error"
                    else None
                ),
            )
            page.goto(url)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            # The kernel is up when the status bar says so; then Run → Run All Cells.
            page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            dashboard = page.locator(".fl-dashboard").first
            dashboard.wait_for(state="visible", timeout=90_000)
            status = dashboard.locator(".fl-status")
            status.locator(".fl-state", has_text="idle").wait_for(timeout=60_000)
            # Every cell has run when the last one has an execution count.
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
                ".every(p => /\\[\\d+\\]/.test(p.textContent))",
                timeout=180_000,
            )
            # Cells JupyterLab has not drawn (windowed notebook) are not in that check: the
            # kernel is done when it is idle again (the exercise solutions run last).
            page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(
                timeout=180_000
            )

            page.evaluate(CLOCK)  # in-page timestamps of clicks and status changes
            dashboard.locator("button.fl-start").click()
            status.locator(".fl-state", has_text="running").wait_for(timeout=10_000)
            page.wait_for_function(
                "() => { const d = document.querySelector('.fl-dashboard .fl-accuracy-plot"
                " path.line'); return d && (d.getAttribute('d') || '').split('L').length >= 4; }",
                timeout=180_000,
            )
            assert _rounds(page) >= 3

            dashboard.locator("button.fl-pause").click()
            status.locator(".fl-state", has_text="paused").wait_for(timeout=60_000)
            clock = page.evaluate("window.__flClock")
            at_pause, points = _rounds(page), _plotted_points(page)
            assert points == at_pause, (points, at_pause)
            time.sleep(3.0)
            assert _rounds(page) == at_pause, "a round arrived after Pause"
            assert _plotted_points(page) == points
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=False)
            dashboard.screenshot(path=str(ARTIFACTS / "dashboard_widget.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard_failure.png"))
            shutil.copy(tmp_path / "jupyterlab.log", ARTIFACTS / "jupyterlab.log")
            print("\n".join(["page errors so far:", *errors]))
            raise
        finally:
            browser.close()
    measured = {
        "start_click_to_running_ms": round(clock["running"] - clock["fl-start"], 1),
        "pause_click_to_pausing_ms": round(clock["pausing"] - clock["fl-pause"], 1),
        "pause_click_to_paused_ms": round(clock["paused"] - clock["fl-pause"], 1),
        "rounds_at_pause": at_pause,
        "measured": "in the page: pointerdown on the button to the status text changing",
    }
    (ARTIFACTS / "browser_latency.json").write_text(json.dumps(measured, indent=1))
    print("\nbutton responsiveness in the browser:", measured)
    assert not errors, "JavaScript errors in the page:\n" + "\n".join(errors)
    shutil.copy(tmp_path / "jupyterlab.log", ARTIFACTS / "jupyterlab.log")


def _watch_errors(page, errors: list[str]) -> None:
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )


def test_quickstart_and_the_notebook_index_open_without_javascript_errors(jupyterlab) -> None:
    """A newcomer's first two pages: notebook 00 (goals shown, solutions collapsed, kernel
    up) and notebooks/README.md rendered as Markdown, with links to every notebook."""
    from playwright.sync_api import sync_playwright

    url, _ = jupyterlab
    base, query = url.split("/lab/tree/")[0], url.split("?", 1)[1]
    errors: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _watch_errors(page, errors)
            page.goto(f"{base}/lab/tree/{QUICKSTART.name}?{query}")
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=90_000)
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
            goals = notebook.locator(".jp-RenderedMarkdown", has_text="Learning goals.").first
            goals.wait_for(timeout=30_000)  # rendered, not the hidden Markdown source
            # The solutions cell (the last) is collapsed: JupyterLab hides its input and shows
            # a placeholder. The notebook is windowed, so scroll the last cell into the DOM.
            # Under load JupyterLab may apply the cell's collapsed metadata a moment after
            # the cell enters the DOM: poll (up to 30 s) before judging.
            hidden, patience = "", time.monotonic() + 30
            while hidden != "true" and time.monotonic() < patience:
                hidden = page.evaluate(
                    """async () => {
                      const nb = window.jupyterapp.shell.currentWidget.content;
                      const last = nb.widgets.length - 1;
                      nb.activeCellIndex = last;
                      await nb.scrollToItem(last);
                      return String(nb.widgets[last].inputHidden);
                    }"""
                )
                if hidden != "true":
                    page.wait_for_timeout(500)
            assert hidden == "true", f"the solutions cell of notebook 00 is not collapsed: {hidden}"
            notebook.locator(".jp-InputPlaceholder").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "quickstart.png"))

            page.evaluate(
                "async path => {"
                " await window.jupyterapp.commands.execute('markdownviewer:open', {path});"
                " return true; }",  # the command resolves to a widget: do not ship it back
                INDEX.name,
            )
            rendered = page.locator(".jp-MarkdownViewer .jp-RenderedMarkdown").last
            rendered.wait_for(timeout=30_000)
            rendered.get_by_text("Notebooks").first.wait_for(timeout=30_000)
            links = rendered.locator("a").evaluate_all("as => as.map(a => a.textContent)")
            for stem in ("00_quickstart", "01_model_compression", "02_device_kits",
                         "03_live_federated_rounds", "04_privacy_accounting"):  # fmt: skip
                assert any(stem in text for text in links), (stem, links)
            page.screenshot(path=str(ARTIFACTS / "notebook_index.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "first_pages_failure.png"))
            print("\n".join(["page errors so far:", *errors]))
            raise
        finally:
            browser.close()
    assert not errors, "JavaScript errors in the page:\n" + "\n".join(errors)
