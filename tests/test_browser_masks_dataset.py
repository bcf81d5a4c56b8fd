"""explore_masks and explore_dataset as a researcher uses them (issue 25): JupyterLab in headless Chromium, Run All,
widgets driven with the keyboard and the mouse; screenshots under outputs/browser/."""
import re

import pytest

from lab import ARGS, Lab, assert_clean, checkout_copy, chromium_or_skip, new_page, open_and_run, shot_output, wait_quiet

STATUS = ".mask-status"
DONE = r"\(drawn in [0-9.]+ s\)"


def control(page, label: str):
    "The widget whose description is `label`."
    return page.locator(f".jupyter-widgets:has(> label.widget-label:text-is('{label}'))").first


def status(page) -> str:
    return page.locator(STATUS).inner_text()


def settled(page, pattern: str, timeout_s: float = 60):
    "Wait until the status is a finished drawing (no busy sign) that matches `pattern`, and the kernel is idle."
    page.wait_for_function(f"() => {{ const t = document.querySelector('{STATUS}').innerText;"
                           f" return !t.includes('drawing ') && /{DONE}/.test(t) && /{pattern}/.test(t) }}", timeout=timeout_s * 1000)
    wait_quiet(page)
    page.wait_for_timeout(1000)                                   # nothing stale arrives after
    assert re.search(pattern, status(page)) and "drawing " not in status(page), status(page)


def record_status(page):
    "From now on, every new text the status shows goes into window.seen, with the time it came (window.times, ms)."
    page.evaluate(f"""() => {{ const el = document.querySelector('{STATUS}'); window.seen = []; window.times = [];
        new MutationObserver(() => {{ if (window.seen.at(-1) !== el.innerText) {{
            window.seen.push(el.innerText); window.times.push(performance.now()) }} }}).observe(el, {{subtree: true, childList: true, characterData: true}}) }}""")


def test_explore_masks_in_jupyterlab(tmp_path):
    """Run All is clean; fast key presses on the blocks slider end at what it reads, with a busy sign while drawing;
    a preset ends exactly at its values, after one redraw."""
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    root = checkout_copy(tmp_path / "checkout", ["explore_masks.ipynb"])
    with Lab(root) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = new_page(browser, height=1900)
        open_and_run(page, lab.url("nbs/explore_masks.ipynb"))
        assert_clean(page, "explore_masks")
        settled(page, r"^8 blocks of 0\.15")
        titles = page.locator(".js-plotly-plot .annotation-text").all_text_contents()
        assert any(re.search(r"tubelet 0\s*frames 0–1, 0\.00–0\.50 s", t) for t in titles), titles
        shot_output(page, "explore_masks")
        drag = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first       # the first tubelet over the frame
        box = drag.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        hover = page.locator(".js-plotly-plot .hoverlayer .hovertext").first
        hover.wait_for(timeout=10_000)
        assert re.search(r"tubelet 0 \(frames 0–1, 0\.00–0\.50 s\)\s*patch row \d+, column \d+: (context|target|neither)",
                         hover.text_content()), hover.text_content()
        page.mouse.move(0, 0)

        blocks = control(page, "blocks")
        handle = blocks.locator(".noUi-handle")
        record_status(page)
        handle.focus()
        pressed = page.evaluate("performance.now()")
        handle.press("ArrowLeft")                                 # one step, timed: 8 -> 7
        settled(page, r"^7 blocks")
        done = page.evaluate(f"window.times[window.seen.findIndex(s => /^7 blocks.*{DONE}/s.test(s))]")
        print(f"\none redraw in the browser, key press to the finished status: {(done - pressed) / 1000:.2f} s")
        for key in ["ArrowRight"] * 3 + ["ArrowLeft"] * 7:        # fast: 7 -> 10 -> 3
            handle.press(key)
        settled(page, r"^3 blocks")
        assert blocks.locator(".widget-readout").inner_text().strip() == "3"
        seen = page.evaluate("window.seen")
        assert any("drawing " in s for s in seen), f"no busy sign while drawing: {seen}"
        assert re.match(r"3 blocks", seen[-1]), f"the last status is not for 3 blocks: {seen[-1]}"

        record_status(page)
        control(page, "preset").locator("select").select_option(label="2 large blocks (recipe 1)")
        settled(page, r"^2 blocks of 0\.70 of the frame, aspect 0\.75–1\.50")
        assert blocks.locator(".widget-readout").inner_text().strip() == "2"
        assert control(page, "block area (fraction of frame)").locator(".widget-readout").inner_text().strip() == "0.70"
        drawings = [s for s in page.evaluate("window.seen") if re.search(DONE, s)]
        assert len(drawings) == 1, f"a preset redrew {len(drawings)} times: {drawings}"
        assert_clean(page, "explore_masks after the sliders")
        shot_output(page, "explore_masks_preset")
        browser.close()


def test_explore_dataset_in_jupyterlab(tmp_path):
    """On two tiny sim episodes under outputs/: Run All is clean, the legend lies inside every box around it, the
    episodes are named by task, seed and length, and the frame's title is short."""
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    from vjepa2wb.collect import collect
    root = checkout_copy(tmp_path / "checkout", ["explore_dataset.ipynb"])
    collect(root / "outputs" / "collect_sim" / "tiny", episodes=2, size=64, progress=False)
    with Lab(root) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = new_page(browser, height=1300)
        open_and_run(page, lab.url("nbs/explore_dataset.ipynb"))
        assert_clean(page, "explore_dataset")
        shot_output(page, "explore_dataset")

        episodes = control(page, "episode").locator("option").all_inner_texts()
        assert len(episodes) == 2, episodes
        for name in (e.replace("\xa0", " ") for e in episodes):      # a dropdown shows spaces as no-break spaces
            assert re.fullmatch(r"#\d+: (?!no task)\S.*, seed \d+, \d+ frames", name), name

        # the legend and the frame's title lie inside their figure and inside every box around it that clips
        outside = page.evaluate("""() => {
            const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1 && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
            const bad = [];
            for (const el of document.querySelectorAll('.js-plotly-plot .legend, .js-plotly-plot .gtitle')) {
                const r = el.getBoundingClientRect();
                if (!inside(r, el.closest('.main-svg').getBoundingClientRect())) bad.push(el.getAttribute('class') + ' outside its figure');
                for (let up = el.closest('.js-plotly-plot'); up && !up.classList.contains('jp-OutputArea'); up = up.parentElement) {
                    const o = getComputedStyle(up);
                    if ((o.overflowX !== 'visible' || o.overflowY !== 'visible') && !inside(r, up.getBoundingClientRect()))
                        bad.push(el.getAttribute('class') + ' clipped by ' + up.className);
                }
            }
            return bad }""")
        assert not outside, outside
        title = page.locator(".js-plotly-plot .gtitle").first.text_content()
        assert re.fullmatch(r"frame 0 of \d+ at 0\.00 s", title), title

        scrub = control(page, "frame").locator(".noUi-handle")
        scrub.focus()
        scrub.press("ArrowRight")
        page.wait_for_function("() => /^frame 1 of/.test(document.querySelector('.js-plotly-plot .gtitle').textContent)",
                               timeout=30_000)
        wait_quiet(page)
        assert_clean(page, "explore_dataset after scrubbing")
        shot_output(page, "explore_dataset_frame1")
        browser.close()
