"""Every explorer as a new user opens it in JupyterLab: on a fresh clone, and after `make run` has trained a model and
recorded its episodes. Each runs with Run All to the end, cleanly, and says which model it shows."""
from pathlib import Path

import pytest

from lab import ARGS, SHOTS, Lab, assert_clean, checkout_copy, chromium_or_skip, new_page, open_and_run, shot_output

UNTRAINED = "text=This is an untrained model"


def _run_each(root: Path, names, check, tag: str):
    from playwright.sync_api import sync_playwright
    with Lab(root) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_or_skip(), args=ARGS)
        for name in names:
            page = new_page(browser)
            stem = f"{tag}_{Path(name).stem}"
            open_and_run(page, lab.url(f"nbs/{name}"), SHOTS / stem)
            shot_output(page, stem)
            assert_clean(page, f"{name} ({tag})")
            check(name, page)
            page.close()
        browser.close()


def test_every_explorer_on_a_fresh_clone(tmp_path):
    """No run yet: the model-based explorers warn loudly that their model is untrained; explore_dataset says where
    recordings come from; explore_probe says how to make a probe run."""
    chromium_or_skip()
    names = ["explore_energy.ipynb", "explore_dataset.ipynb"]
    root = checkout_copy(tmp_path / "checkout", names)
    def check(name, page):
        if name == "explore_energy.ipynb":
            assert page.locator(UNTRAINED).count() == 1, "no untrained-model banner"
        else:           # no recording yet: the official example trajectory
            assert page.locator("text=franka_example_traj.npz").count() >= 1
    _run_each(root, names, check, "fresh")


@pytest.mark.slow
def test_explore_probe_on_a_fresh_clone(tmp_path):
    "With no probe run yet, explore_probe runs the probe and anticipate jobs first (minutes), then shows them."
    chromium_or_skip()
    root = checkout_copy(tmp_path / "checkout", ["explore_probe.ipynb", "probe.ipynb", "anticipate.ipynb"])
    def check(name, page):
        assert page.locator("text=No probe run under").count() == 1 and page.locator("text=top-5").count() >= 1
    _run_each(root, ["explore_probe.ipynb"], check, "fresh")


def _make_run_outputs(root: Path) -> Path:
    "What `make run` leaves under outputs/run/<id>: its recorded episodes, and an AC checkpoint trained on them."
    import pandas as pd
    from vjepa2wb.collect import collect
    from vjepa2wb.training import save_training_checkpoint
    from vjepa2wb.world_model import fixture_world_model
    run = root / "outputs" / "run" / "20261202-120000"
    collect(run / "collect_sim", episodes=2, size=64, progress=False)
    return save_training_checkpoint(run / "train_ac", 1, fixture_world_model(), {}, {}, pd.DataFrame({"step": [1]}))


def test_every_explorer_after_make_run(tmp_path):
    """After a run, each explorer finds its model (the newest train_ac checkpoint) and its episodes by itself, with no
    parameter: no untrained banner, and the checkpoint named."""
    chromium_or_skip()
    names = ["explore_energy.ipynb", "explore_rollouts.ipynb", "explore_dataset.ipynb", "live_planning.ipynb"]
    root = checkout_copy(tmp_path / "checkout", names)
    checkpoint = _make_run_outputs(root)
    def check(name, page):
        if name == "explore_dataset.ipynb":
            assert page.locator("text=20261202-120000").count() >= 1, "explore_dataset did not find make run's episodes"
            return
        assert page.locator(UNTRAINED).count() == 0, f"{name} shows the untrained model after make run"
        assert page.locator(f"text={checkpoint.parent.parent.parent.name}").count() >= 1, f"{name} does not name make run's model"
    _run_each(root, names, check, "after_run")
