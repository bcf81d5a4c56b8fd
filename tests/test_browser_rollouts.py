"""explore_rollouts in JupyterLab (headless Chromium), as a researcher uses it: Run All on a fresh checkout, then the
horizon changed a few times, each time a clean grid of token maps; a checkpoint loaded by its path in the panel."""
import re
from collections import Counter

from lab import (ARGS, SHOTS, Lab, assert_clean, checkout_copy, chromium_or_skip, new_page, open_and_run, shot, shot_output,
                 wait_quiet)

NOTEBOOK = "explore_rollouts.ipynb"
PANEL = -1                                   # the panel is the last cell's output

# what the page shows of the panel's figures: the status line, and each plot's traces and subplot titles
READ = """() => {
  const status = [...document.querySelectorAll('.widget-html-content')].map(e => e.textContent)
                 .find(t => t.startsWith('shown:') || t.includes('computing:') || t.startsWith('cannot imagine')) || '';
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(g => g._fullLayout && g.data);
  const axis = (g, id, c) => g._fullLayout[c + 'axis' + (id || c).slice(1)].domain;
  const maps = plots.filter(g => g.data.some(t => t.type === 'image'));
  const errors = plots.filter(g => g.data.length && g.data.every(t => t.type === 'scatter'));
  return {status, maps: maps.map(g => ({
            images: g.data.filter(t => t.type === 'image').map(t => ({name: t.name, x: axis(g, t.xaxis, 'x'), y: axis(g, t.yaxis, 'y')})),
            titles: (g._fullLayout.annotations || []).map(a => ({text: a.text, y: a.y}))})),
          errors: errors.map(g => ({n: g.data.map(t => t.y.length), ticks: g._fullLayout.xaxis.tickvals,
                                    xtitle: g._fullLayout.xaxis.title.text, ytitle: g._fullLayout.yaxis.title.text}))};
}"""
ROWS = ("predicted t+", "actual t+", "nearest to t+")

# every text the status line takes, in order, into window.statuses: a busy sign or a result too brief to be caught
RECORD = """() => { window.statuses = [];
  new MutationObserver(() => {
    const t = [...document.querySelectorAll('.widget-html-content')].map(e => e.textContent)
              .find(t => t.startsWith('shown:') || t.includes('computing:'));
    if (t && t !== window.statuses[window.statuses.length - 1]) window.statuses.push(t);
  }).observe(document.body, {childList: true, subtree: true, characterData: true}); }"""


def set_slider(page, label: str, value):
    "Type `value` into the readout of the slider described `label`, as a person does (one change, on Enter)."
    readout = page.locator(f".widget-slider:has(label:text-is('{label}')) .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def settled(page, H: int, timeout_s: float = 60) -> dict:
    "What the panel shows once the kernel is idle, the status names a rollout of `H` steps, and its figures are drawn."
    wait_quiet(page)
    try:
        page.wait_for_function(f"() => {{ const r = ({READ})(); return r.status.startsWith('shown:') && r.status.includes(', {H} steps')"
                               f" && r.maps.length === 1 && r.maps[0].images.length === {3 * H} }}", timeout=timeout_s * 1000)
    except Exception:
        pass                                 # the assertions below say what is wrong
    page.wait_for_timeout(300)
    return page.evaluate(READ)


def assert_clean_grid(shown: dict, H: int):
    "Exactly 3*H images and 3*H distinct subplot titles, each row holding its own kind, no two images overlapping in a row."
    assert shown["status"].startswith("shown:") and f", {H} steps" in shown["status"], shown["status"]
    assert len(shown["maps"]) == 1, f"{len(shown['maps'])} token-map figures on the page"
    images, titles = shown["maps"][0]["images"], shown["maps"][0]["titles"]
    assert len(images) == 3 * H, f"{len(images)} images for a horizon of {H}"
    texts = Counter(t["text"] for t in titles)
    assert len(titles) == 3 * H and max(texts.values()) == 1, f"subplot titles for a horizon of {H}: {sorted(texts)}"
    rows = sorted({round(i["y"][1], 4) for i in images}, reverse=True)
    assert len(rows) == 3, f"images in {len(rows)} rows"
    title_rows = sorted({round(t["y"], 3) for t in titles}, reverse=True)
    assert len(title_rows) == 3, f"subplot titles at {len(title_rows)} heights"
    for top, title_y, kind in zip(rows, title_rows, ROWS):
        row = sorted((i for i in images if round(i["y"][1], 4) == top), key=lambda i: i["x"][0])
        assert [i["name"].startswith(kind) for i in row] == [True] * H, f"row {kind!r} holds {[i['name'] for i in row]}"
        assert [int(re.match(r"\D+(\d+)", i["name"])[1]) for i in row] == list(range(1, H + 1)), [i["name"] for i in row]
        for left, right in zip(row, row[1:]):
            assert left["x"][1] <= right["x"][0] + 1e-9, f"{left['name']} {left['x']} overlaps {right['name']} {right['x']}"
        in_row = sorted(t["text"] for t in titles if round(t["y"], 3) == title_y)
        assert in_row == sorted(i["name"] for i in row), f"titles {in_row} over the images {[i['name'] for i in row]}"
    errors, = shown["errors"]
    assert errors["n"] == [H, H] and errors["ticks"] == list(range(1, H + 1)), errors
    assert "(unitless)" in errors["ytitle"] and "frames after the start" in errors["xtitle"], errors


def hover_text(page, image: int, name: str | None = None) -> str:
    "The hover label of the token-map figure's image number `image` (0: predicted t+1); a screenshot `name` of it."
    maps = page.locator(".js-plotly-plot:has(.imagelayer image)")
    maps.scroll_into_view_if_needed()
    maps.locator(".nsewdrag").nth(image).hover()
    page.wait_for_selector(".js-plotly-plot .hovertext", timeout=10_000)
    if name:                                 # the figure as it is on screen: scrolling would move the hover away
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), clip=maps.bounding_box())
    text = maps.locator(".hovertext").first.text_content()
    page.mouse.move(0, 0)
    return text


def test_rollout_explorer_in_jupyterlab(tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    from vjepa2wb.checkpoints import save_checkpoint
    from vjepa2wb.world_model import fixture_world_model
    root = checkout_copy(tmp_path / "checkout", [NOTEBOOK])
    good = save_checkpoint(fixture_world_model(), tmp_path / "saved_ac")      # an AC checkpoint the panel can load by path
    with Lab(root) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = new_page(browser, height=1800)               # the whole panel in view, for its screenshots
        open_and_run(page, lab.url(f"nbs/{NOTEBOOK}"), shot=SHOTS / "rollouts")
        assert_clean(page, NOTEBOOK)
        assert page.locator("text=This is an untrained model").count() == 1, "no banner naming the untrained model"
        assert (root / "outputs" / "collect_sim").is_dir(), "the notebook recorded no sim episodes into the checkout"
        assert_clean_grid(settled(page, 3), 3)
        shot(page, "rollouts_run_all")
        hover = hover_text(page, 0, "rollouts_hover")
        assert "predicted t+1" in hover and "token column" in hover and "(unitless)" in hover, hover
        assert "px" in hover_text(page, 6), "the camera frames' hover gives no pixels"
        shot_output(page, "rollouts_horizon_3", PANEL)
        page.evaluate(RECORD)

        for H in (5, 2):
            set_slider(page, "horizon (steps)", H)
            assert_clean_grid(settled(page, H), H)
            assert any("computing:" in t and f", {H} steps" in t for t in page.evaluate("window.statuses")), \
                f"no busy sign while the rollout of {H} steps was computed"
            assert_clean(page, f"{NOTEBOOK} after the horizon went to {H}")
            shot_output(page, f"rollouts_horizon_{H}", PANEL)

        set_slider(page, "horizon (steps)", 6)                  # two changes in a row: only the newest is shown
        set_slider(page, "horizon (steps)", 4)
        assert_clean_grid(settled(page, 4), 4)
        seen = page.evaluate("window.statuses")
        asked = next(i for i, t in enumerate(seen) if "computing:" in t and ", 4 steps" in t)
        assert not [t for t in seen[asked:] if t.startswith("shown:") and ", 6 steps" in t], f"an older setting was shown: {seen}"
        set_slider(page, "dx (cm)", 2.5)
        assert "dx +2.5 cm" in settled(page, 4)["status"]

        box = page.locator(".widget-text:has(label:text-is('checkpoint')) input")
        box.fill("/nowhere/ac_checkpoint.pt")
        page.click(".widget-button:has-text('Load')")
        page.wait_for_selector("text=not loaded", timeout=30_000)
        assert "/nowhere/ac_checkpoint.pt" in page.locator(".widget-html-content:has-text('not loaded')").text_content()
        assert_clean(page, f"{NOTEBOOK} after a bad checkpoint path")
        assert page.locator("text=This is an untrained model").count() == 1, "a refused checkpoint changed the model"
        shot_output(page, "rollouts_bad_checkpoint", PANEL)

        box.fill(str(good))
        page.click(".widget-button:has-text('Load')")
        page.wait_for_selector(f"text=loaded {good}", timeout=60_000)
        page.wait_for_selector(f"text=world model: {good}", timeout=30_000)              # the banner follows
        assert page.locator("text=This is an untrained model").count() == 0
        assert_clean_grid(settled(page, 4), 4)
        assert_clean(page, f"{NOTEBOOK} after loading {good}")
        shot_output(page, "rollouts_loaded_checkpoint", PANEL)
        browser.close()
