"The live planning panel, used as a person uses it: JupyterLab in headless Chromium, driven by Playwright."
import os, re, subprocess, sys, time
import numpy as np
import pytest

from lab import ARGS, SHOTS, Lab, assert_clean, checkout_copy, chromium_or_skip, new_page, open_and_run

STEP_ENABLED = "() => [...document.querySelectorAll('.widget-button')].some(b => b.textContent.includes('Step') && !b.disabled)"
POINTS = "() => { const g = document.querySelector('.js-plotly-plot'); return g && g.data ? g.data[0].y.length : -1 }"


def _panel(p, url: str, name: str):
    "Chromium on the live panel of `url`, after Run All."
    browser = p.chromium.launch(executable_path=chromium_or_skip(), args=ARGS)
    page = new_page(browser)
    open_and_run(page, url, SHOTS / name)
    page.locator(".widget-button:has-text('Step')").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", state="attached", timeout=60_000)
    return browser, page


def _state(page) -> str:
    return page.locator(".widget-html table:has-text('gripper')").last.inner_text()


def test_live_panel_in_jupyterlab(tmp_path):
    "On a fresh clone: Step plans and executes one action, and the camera, the plot, the state and the history show it."
    chromium_or_skip()
    from playwright.sync_api import sync_playwright
    root = checkout_copy(tmp_path / "checkout", ["live_planning.ipynb"])
    with Lab(root) as lab, sync_playwright() as p:
        browser, page = _panel(p, lab.url("nbs/live_planning.ipynb"), "live_planning")
        camera = page.locator(".widget-image").first
        before = camera.get_attribute("src")
        assert page.evaluate(POINTS) == 0 and page.locator("text=no step executed yet").count() == 1
        page.screenshot(path=str(SHOTS / "live_before_step.png"))
        page.locator(".widget-button:has-text('Step')").click()
        page.wait_for_function(f"() => ({POINTS})() >= 1", timeout=120_000)
        page.wait_for_function(STEP_ENABLED, timeout=120_000)
        assert camera.get_attribute("src") != before, "the camera image did not change after Step"
        status = page.locator("text=/step 0: energy [0-9.]+, [0-9.]+ cm from the goal/")
        assert status.count() >= 1, "the status does not say how far the goal is"
        assert re.search(r"\d+ of \d+ CEM iterations", status.first.inner_text())
        assert page.locator("text=last 1 of 1 steps").count() == 1, "the history table did not refresh"
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "live_after_step.png"))
        assert_clean(page, "live_planning")
        browser.close()


def _load(n: int):
    "`n` processes that keep every core busy: a machine loaded by other work."
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_stop_under_load_takes_effect_within_one_cem_iteration(tmp_path):
    """With every core busy twice over, STOP during a Run ends it after at most the CEM iteration in progress (as the
    kernel measures it), the page shows it within a few iterations' time, and no step follows."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright
    root = checkout_copy(tmp_path / "checkout", ["live_planning.ipynb"], {"live_planning.ipynb":
        'planner = {"samples": 1024, "iterations": 1000, "topk": 8, "tol": 0.0}'})
    with Lab(root) as lab, sync_playwright() as p:
        browser, page = _panel(p, lab.url("nbs/live_planning.ipynb"), "live_stop_under_load")
        page.locator(".widget-text:has-text('Run steps') input").fill("200")
        cem = "() => { const g = document.querySelector('.js-plotly-plot'); return g && g.data ? g.data[1].y.length : -1 }"
        load = _load(2 * (os.cpu_count() or 2))
        try:
            page.locator(".widget-button:has-text('Run')").click()
            page.wait_for_function(f"() => ({cem})() >= 2", timeout=120_000)
            t0, n0 = time.monotonic(), page.evaluate(cem)
            page.wait_for_function(f"() => ({cem})() >= {n0 + 2}", timeout=120_000)
            per_iteration = (time.monotonic() - t0) / max(1, page.evaluate(cem) - n0)      # under this load
            clicked = time.monotonic()
            page.locator(".widget-button:has-text('STOP')").click()
            page.wait_for_selector("text=/stopped after [0-9]+ steps, [0-9]+ CEM iteration/", timeout=120_000)
            seen = time.monotonic() - clicked
            page.wait_for_function(STEP_ENABLED, timeout=60_000)
            text = page.locator("text=/stopped after [0-9]+ steps/").first.inner_text()
            page.screenshot(path=str(SHOTS / "live_stop_under_load.png"))
        finally:
            for proc in load:
                proc.kill()
        after, seconds = map(float, re.search(r"(\d+) CEM iteration\(s\) and ([0-9.]+) s after STOP", text).groups())
        iterations = page.evaluate(cem)
        print(f"under load, {per_iteration:.2f} s per CEM iteration: STOP seen on the page {seen:.2f} s after the click; the kernel: {after:.0f} iteration(s), "
              f"{seconds:.2f} s after STOP; {iterations} iterations of this plan had run")
        assert after <= 1, f"the planner ran {after} CEM iterations after STOP"
        steps = page.evaluate(POINTS)
        page.wait_for_timeout(2000)
        assert page.evaluate(POINTS) == steps < 200, "steps went on after STOP"
        assert seconds <= 1.5 * per_iteration + 1, f"the run ended {seconds:.1f} s after STOP, {per_iteration:.2f} s per iteration"
        assert seen < 3 * per_iteration + 5, f"STOP took {seen:.1f} s to show, {per_iteration:.2f} s per iteration"
        assert_clean(page, "live_planning under load")
        browser.close()


def test_live_panel_drives_franka_sim(tmp_path):
    """The panel against FrankaArm on franka-sim (loopback), a video file standing in for the camera: Step moves the arm
    (the state readout changes), and STOP ends a Run and holds the arm."""
    chromium_or_skip()
    from vjepa2wb.data import write_video
    from vjepa2wb.franka import FrankaSim
    sim = FrankaSim(log=tmp_path / "sim.log")
    if not sim.available:
        pytest.skip("no franka-sim venv (make franka-sim-venv)")
    frames = np.tile(np.linspace(40, 200, 64, dtype=np.uint8)[None, None, :, None], (20, 48, 1, 3))
    frames[np.arange(20), :, 8 + 2 * np.arange(20)] = 255              # a moving bar: the camera visibly changes
    write_video(tmp_path / "view.mp4", frames, fps=10, lossless=True)
    root = checkout_copy(tmp_path / "checkout", ["live_planning.ipynb"], {"live_planning.ipynb":
        f'arm = "franka://127.0.0.1"\ncamera = "file:{tmp_path / "view.mp4"}"\n'
        f'planner = {{"samples": 16, "iterations": 40, "topk": 4, "tol": 0.0}}'})
    sim.start(timeout=60)
    from playwright.sync_api import sync_playwright
    try:
        with Lab(root) as lab, sync_playwright() as p:
            browser, page = _panel(p, lab.url("nbs/live_planning.ipynb"), "live_franka")
            before = _state(page)
            page.locator(".widget-button:has-text('Step')").click()
            page.wait_for_selector("text=step 0: energy", timeout=120_000)
            page.wait_for_function(STEP_ENABLED, timeout=120_000)
            assert _state(page) != before, "the state readout did not change after Step"
            page.screenshot(path=str(SHOTS / "franka_after_step.png"))
            page.locator(".widget-text:has-text('Run steps') input").fill("500")
            page.locator(".widget-button:has-text('Run')").click()
            page.wait_for_function(f"() => ({POINTS})() >= 3", timeout=120_000)
            page.locator(".widget-button:has-text('STOP')").click()
            page.wait_for_selector("text=/stopped after [0-9]+ steps.*: the arm holds/", timeout=60_000)
            page.wait_for_function(STEP_ENABLED, timeout=60_000)          # the run ended: Step is back
            n = page.evaluate(POINTS)
            page.wait_for_timeout(2000)
            assert page.evaluate(POINTS) == n < 500, "steps went on after STOP"
            page.screenshot(path=str(SHOTS / "franka_after_stop.png"))
            assert_clean(page, "live_planning on franka-sim")
            browser.close()
    finally:
        sim.stop()
