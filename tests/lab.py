"""JupyterLab in headless Chromium, as a researcher uses it: the shared harness of the browser tests.

`Lab(root)` serves a folder laid out as a checkout (settings.ini, nbs/, outputs/); `open_and_run(page, url)` opens a
notebook, runs it with Run All and waits for every cell; `assert_clean` checks that nothing went wrong on the page."""
import json, os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "outputs" / "browser"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
BUSY = ".jp-InputPrompt:has-text('[*]')"
OPEN = ".jp-NotebookPanel:not(.lm-mod-hidden)"             # the notebook in view, not another tab's


def chromium_or_skip() -> str:
    "The Chromium to drive, or a loud skip naming what is missing."
    chromium = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        msg = ("\n" + "!" * 78 + "\nSKIPPING a browser test: no Chromium (apt-get install -y chromium) or no playwright.\n" + "!" * 78)
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    return chromium


def checkout_copy(root: Path, notebooks, parameters: dict | None = None) -> Path:
    """A folder that the project's code takes for a checkout (`settings.ini`, `nbs/`), holding copies of `notebooks`
    (Lab may autosave: never the real nbs/), each with `parameters[name]` appended to its parameters cell."""
    (root / "nbs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "settings.ini", root / "settings.ini")
    for name in notebooks:
        nb = json.loads((ROOT / "nbs" / name).read_text())
        extra = (parameters or {}).get(name)
        if extra:
            cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
            cell["source"] = "".join(cell["source"]).rstrip("\n") + "\n" + extra
        (root / "nbs" / name).write_text(json.dumps(nb))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    "A JupyterLab server on folder `root`, for the length of a `with` block; `url(path)` opens a notebook in it."
    def __init__(self, root: Path, env: dict | None = None):
        self.root, self.extra_env = Path(root), env or {}

    def __enter__(self):
        state = self.root.parent / f".lab-{self.root.name}"
        self.token, port = secrets.token_hex(16), _free_port()
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(state / "rt"), JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(state / "ws"), JUPYTER_CONFIG_DIR=str(state / "cfg"), **self.extra_env)
        settings = state / "settings" / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True, exist_ok=True)       # every cell in the page, not only those scrolled into view
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        self.log = state / "lab.log"
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
                                      "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={self.token}",
                                      f"--ServerApp.root_dir={self.root}"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=1)
                return self
            except OSError:
                time.sleep(0.25)
        self.proc.kill()
        raise RuntimeError(f"JupyterLab did not start: {self.log.read_text()[-2000:]}")

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?token={self.token}&reset"     # reset: no tab of an earlier page comes back

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(30)


def new_page(browser, width: int = 1400, height: int = 1100):
    "A page that collects its JavaScript errors in `page.errors`."
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def open_and_run(page, url: str, shot: Path | None = None, timeout_s: float = 600):
    "Open the notebook at `url`, Run All, and wait until every cell has run and the kernel is idle."
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    page.wait_for_timeout(3000)                                # the kernel connection settles after "idle"
    for attempt in range(3):      # Run All before the kernel is connected is silently dropped: then again
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        try:
            page.wait_for_selector(f"{BUSY}, .jp-InputPrompt:has-text('[1]')", timeout=20_000)
            break
        except Exception:
            if shot is not None:
                page.screenshot(path=str(shot.with_name(f"{shot.stem}_run_all_dropped_{attempt}.png")))
    n = page.locator(f"{OPEN} .jp-CodeCell").count()
    try:       # done: the last code cell has a number, none is waiting
        page.wait_for_function(
            f"() => {{ const p = [...document.querySelectorAll('{OPEN} .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);"
            f" return p.length === {n} && p.every(t => /\\[\\d+\\]/.test(t)) }}", timeout=timeout_s * 1000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    except Exception:
        if shot is not None:
            page.screenshot(path=str(shot.with_name(f"{shot.stem}_unfinished.png")), full_page=True)
        raise
    no = page.locator(".jp-toast-button:has-text('No')")     # the news toast
    if no.count():
        no.first.click()
    page.wait_for_timeout(1000)                                # widgets and plotly finish drawing


def tracebacks(page) -> list[str]:
    "The text of every error output on the page."
    return [t for t in page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            if "Error" in t or "Traceback" in t]


def assert_clean(page, what: str = "the notebook"):
    "No traceback, no broken widget, no JavaScript error, and no Python warning on the page."
    errors = tracebacks(page)
    assert not errors, f"{what} raised: {errors[0][-1500:]}"
    assert page.locator("text=Error displaying widget").count() == 0, f"{what}: a widget failed to display"
    warnings = [t for t in page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
                if "Warning" in t]
    assert not warnings, f"{what} warned: {warnings[0][-800:]}"
    assert not page.errors, f"{what}: page errors {page.errors}"


def wait_quiet(page, timeout_s: float = 120):
    "Wait until the kernel is idle again (after a widget change)."
    page.wait_for_timeout(300)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_s * 1000)


def shot(page, name: str, full: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def shot_output(page, name: str, index: int | None = None) -> Path:
    """A screenshot of one cell's outputs (by default the last sizeable one): the notebook scrolls inside its panel,
    the page does not."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    areas = page.locator(f"{OPEN} .jp-Cell-outputArea")
    if index is None:
        sizes = [(box or {}).get("height", 0) for box in (areas.nth(i).bounding_box() for i in range(areas.count()))]
        index = max([i for i, h in enumerate(sizes) if h > 60], default=len(sizes) - 1)
    area = areas.nth(index)
    area.scroll_into_view_if_needed()
    area.screenshot(path=str(path))
    return path
