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

@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on a copy of the notebook (Lab may autosave: never on nbs/)."
    shutil.copy(ROOT / "nbs" / "live_planning.ipynb", tmp_path / "live_planning.ipynb")
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
    yield f"{url}/lab/tree/live_planning.ipynb?token={token}"
    proc.terminate()
    proc.wait(30)

def test_live_panel_in_jupyterlab(lab):
    chromium = _browser()
    from playwright.sync_api import sync_playwright
    shots = ROOT / "outputs" / "live_planning"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
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
