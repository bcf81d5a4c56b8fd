"""explore_energy in JupyterLab (headless Chromium), as a researcher uses it: Run All on the official example, whose true
action lies outside the default grid, then the slices and the cube read back from the page (issue 25)."""
import re

from lab import ARGS, Lab, assert_clean, checkout_copy, chromium_or_skip, new_page, open_and_run, shot_output

NOTEBOOK = "explore_energy.ipynb"

# the two landscape figures as plotly drew them on the page (its _fullData: arrays decoded, the shown slice only):
# the slices have a slider, the cube a 3D scene
FIGURES = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(g => g._fullLayout && g.data);
  const slices = plots.find(g => (g.layout.sliders || []).length), cube = plots.find(g => g.data.some(t => t.type === 'scatter3d'));
  const box = (g, sel) => { const e = g.querySelector(sel); if (!e) return null; const r = e.getBoundingClientRect();
                            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom} };
  const traces = g => g._fullData.map(t => ({type: t.type, name: t.name || '', hover: t.hovertemplate || '',
                                        x: Array.from(t.x || []), y: Array.from(t.y || [])}));
  const area = g => [...document.querySelectorAll('.jp-Cell-outputArea')].findIndex(a => a.contains(g));
  return {slices: slices && {traces: traces(slices), area: area(slices), prefix: slices._fullLayout.sliders[0].currentvalue.prefix,
                             suffix: slices._fullLayout.sliders[0].currentvalue.suffix,
                             xtitle: slices._fullLayout.xaxis.title.text, ytitle: slices._fullLayout.yaxis.title.text},
          cube: cube && {traces: traces(cube), area: area(cube), legend: box(cube, '.legend'), colorbar: box(cube, '.colorbar'),
                         titles: ['xaxis', 'yaxis', 'zaxis'].map(a => cube._fullLayout.scene[a].title.text)}};
}"""


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def hover_text(page, area: int) -> str:
    "What the slices figure (in output area `area`) says when the mouse rests on the middle of its heatmap."
    plot = page.locator(".jp-Cell-outputArea").nth(area).locator(".js-plotly-plot .nsewdrag").first
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    try:
        page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
    except Exception:
        return ""
    return page.locator(".hoverlayer .hovertext").first.text_content()


def test_energy_landscape_in_jupyterlab(tmp_path, fix):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    root = checkout_copy(tmp_path / "checkout", [NOTEBOOK], {NOTEBOOK: 'source = "official"'})
    with Lab(root) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = new_page(browser)
        open_and_run(page, lab.url(f"nbs/{NOTEBOOK}"), shot=tmp_path / "energy.png", timeout_s=240)
        assert_clean(page, NOTEBOOK)
        assert page.locator("text=lies outside the ±7.5 cm grid: widened").count() == 1, "the widened grid is not said"
        shown = page.evaluate(FIGURES)
        slices, cube = shown["slices"], shown["cube"]
        assert slices and cube, f"landscape figures on the page: slices {bool(slices)}, cube {bool(cube)}"
        shot_output(page, "energy_slices", slices["area"])
        shot_output(page, "energy_cube", cube["area"])
        shown = page.evaluate(FIGURES)                         # the cube scrolled into view: its legend and colorbar drawn
        slices, cube = shown["slices"], shown["cube"]
        hovered = hover_text(page, slices["area"])
        shot_output(page, "energy_slices_hover", slices["area"])
        browser.close()

    # the true action's star lies on the grid's cells, not on a blank strip beside them
    cells = [t for t in slices["traces"] if t["type"] == "heatmap" and t["x"]]
    assert len(cells) == 1, f"{len(cells)} slices shown at once"
    star, = [t for t in slices["traces"] if t["name"].startswith("true action")]
    assert "outside" not in star["name"], star["name"]
    for axis in "xy":
        grid = cells[0][axis]
        assert min(grid) <= star[axis][0] <= max(grid), f"the star's d{axis} {star[axis][0]:.1f} cm is off the grid {grid}"
    # units everywhere: axes, the dz slider, the 3D scene (dz included), and the energy on hover
    assert (slices["xtitle"], slices["ytitle"]) == ("dx (cm)", "dy (cm)"), slices
    assert slices["prefix"].startswith("dz") and "cm" in slices["suffix"], slices
    assert cube["titles"] == ["dx (cm)", "dy (cm)", "dz (cm)"], cube["titles"]
    for t in cells + [t for t in cube["traces"] if t["name"] == "grid point"]:
        assert "energy" in t["hover"] and "cm" in t["hover"], f"{t['name']}: hover {t['hover']!r}"
    assert re.search(r"dx -?\d+\.\d cm.*dz -?\d+\.\d cm.*energy \d\.\d+", hovered), f"hovering a cell shows {hovered!r}"
    assert {t["name"].split(",")[0] for t in cube["traces"]} >= {"argmin", "true action"}
    # the cube's legend and colorbar both drawn, apart
    assert cube["legend"] and cube["colorbar"], cube
    assert not overlap(cube["legend"], cube["colorbar"]), f"legend {cube['legend']} overlaps colorbar {cube['colorbar']}"
