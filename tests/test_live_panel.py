"The live planning panel, used as a person uses it: JupyterLab in headless Chromium, driven by Playwright."
import os, secrets, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]

def _browser():
    chromium = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        msg = ("\n" + "!" * 78 + "\nSKIPPING the live-panel browser test: no Chromium (apt-get install -y chromium) "
               "or no playwright.\n" + "!" * 78)
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    return chromium

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def _start_lab(tmp_path, parameters: str = ""):
    """A JupyterLab server on a copy of the notebook (Lab may autosave: never on nbs/), with `parameters` appended to
    its parameters cell; yields the notebook's URL."""
    import json
    nb = json.loads((ROOT / "nbs" / "live_planning.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []) or "".join(c["source"]).startswith("checkpoint ="))
    cell["source"] = "".join(cell["source"]).rstrip("\n") + "\n" + parameters
    (tmp_path / "live_planning.ipynb").write_text(json.dumps(nb))
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
                             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.25)
    else:
        proc.kill()
        raise RuntimeError(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    try:
        yield f"{url}/lab/tree/live_planning.ipynb?token={token}"
    finally:
        proc.terminate()
        proc.wait(30)

@pytest.fixture
def lab(tmp_path):
    yield from _start_lab(tmp_path)

def _open_panel(p, chromium, lab, shots):
    "Open the notebook in JupyterLab, Run All, and wait for the panel; returns the page and its page errors."
    browser = p.chromium.launch(executable_path=chromium, args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(lab)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    page.wait_for_timeout(3000)                                # the kernel connection settles after "idle"
    step = page.locator(".widget-button:has-text('Step')")
    for attempt in range(3):      # Run All before the kernel is connected is silently dropped: then again
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        try:
            page.wait_for_selector(".jp-InputPrompt:has-text('[*]'), .jp-InputPrompt:has-text('[1]')", timeout=20_000)
            break
        except Exception:
            page.screenshot(path=str(shots / f"run_all_dropped_{attempt}.png"))
    try:
        step.wait_for(timeout=180_000)
    except Exception:
        page.screenshot(path=str(shots / "no_panel.png"))      # what the page showed instead
        raise
    page.wait_for_selector(".js-plotly-plot", state="attached", timeout=60_000)
    no = page.locator(".jp-toast-button:has-text('No')")     # the news toast
    if no.count():
        no.first.click()
    return browser, page, errors

def test_live_panel_in_jupyterlab(lab):
    chromium = _browser()
    from playwright.sync_api import sync_playwright
    shots = ROOT / "outputs" / "live_planning"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser, page, errors = _open_panel(p, chromium, lab, shots)
        step = page.locator(".widget-button:has-text('Step')")
        camera = page.locator(".widget-image").first
        before = camera.get_attribute("src")
        points = "() => { const g = document.querySelector('.js-plotly-plot'); return g && g.data ? g.data[0].y.length : -1 }"
        assert page.evaluate(points) == 0
        page.screenshot(path=str(shots / "before_step.png"))
        step.click()
        page.wait_for_function(f"() => ({points})() >= 1", timeout=120_000)
        page.wait_for_function("() => [...document.querySelectorAll('.widget-button')].some(b => b.textContent.includes('Step') && !b.disabled)",
                               timeout=120_000)
        assert camera.get_attribute("src") != before, "the camera image did not change after Step"
        assert page.locator("text=step 0: energy").count() >= 1
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "after_step.png"))
        assert page.locator("text=Error displaying widget").count() == 0
        assert not errors, errors
        browser.close()


STEP_ENABLED = "() => [...document.querySelectorAll('.widget-button')].some(b => b.textContent.includes('Step') && !b.disabled)"

def test_live_panel_drives_franka_sim(tmp_path):
    """The panel against FrankaArm on franka-sim (loopback), a video file standing in for the camera: Step moves the arm
    (the state readout changes), and STOP ends a Run and holds the arm."""
    chromium = _browser()
    from vjepa2wb.data import write_video
    from vjepa2wb.franka import FrankaSim
    sim = FrankaSim(log=tmp_path / "sim.log")
    if not sim.available:
        pytest.skip("no franka-sim venv (make franka-sim-venv)")
    import numpy as np
    frames = np.tile(np.linspace(40, 200, 64, dtype=np.uint8)[None, None, :, None], (20, 48, 1, 3))
    frames[np.arange(20), :, 8 + 2 * np.arange(20)] = 255              # a moving bar: the camera visibly changes
    write_video(tmp_path / "view.mp4", frames, fps=10, lossless=True)
    shots = ROOT / "outputs" / "live_planning"
    shots.mkdir(parents=True, exist_ok=True)
    sim.start(timeout=60)
    try:
        lab = _start_lab(tmp_path, f'arm = "franka://127.0.0.1"\ncamera = "file:{tmp_path / "view.mp4"}"\nplanner = {{"samples": 16, "iterations": 40, "topk": 4, "tol": 0.0}}')
        url = next(lab)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            browser, page, errors = _open_panel(p, chromium, url, shots)
            state = lambda: page.locator(".widget-html table:has-text('gripper')").last.inner_text()
            before = state()
            page.locator(".widget-button:has-text('Step')").click()
            page.wait_for_selector("text=step 0: energy", timeout=120_000)
            page.wait_for_function(STEP_ENABLED, timeout=120_000)
            assert state() != before, "the state readout did not change after Step"
            page.screenshot(path=str(shots / "franka_after_step.png"))
            points = "() => { const g = document.querySelector('.js-plotly-plot'); return g && g.data ? g.data[0].y.length : -1 }"
            page.locator(".widget-text:has-text('Run steps') input").fill("500")
            page.locator(".widget-button:has-text('Run')").click()
            page.wait_for_function(f"() => ({points})() >= 3", timeout=120_000)
            page.locator(".widget-button:has-text('STOP')").click()
            page.wait_for_selector("text=/stopped after [0-9]+ steps: the arm holds/", timeout=60_000)
            page.wait_for_function(STEP_ENABLED, timeout=60_000)          # the run ended: Step is back
            n = page.evaluate(points)
            page.wait_for_timeout(2000)
            assert page.evaluate(points) == n < 500, "steps went on after STOP"
            page.screenshot(path=str(shots / "franka_after_stop.png"))
            assert page.locator("text=Error displaying widget").count() == 0
            assert not errors, errors
            browser.close()
        next(lab, None)
    finally:
        sim.stop()
