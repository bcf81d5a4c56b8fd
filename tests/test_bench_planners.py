"""bench_planners compares planners at equal compute on the same episodes, and refuses bad parameters."""
import json

import pandas as pd
import papermill as pm
import pytest

from conftest import ROOT


def run(tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / "bench_planners.ipynb", tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=1800)


def test_bench_planners_counts_equal_compute(tmp_path, fix, hp):
    from vjepa2wb import load_checkpoint, save_checkpoint
    ckpt = save_checkpoint(load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"]),
                           tmp_path / "ac_model")
    out = tmp_path / "bench"
    run(tmp_path, checkpoint=str(ckpt), planners=["fast", "mppi", "gd"], budgets=[0.5, 1.0], reference="notebook",
        max_steps=1, size=hp["encoder"]["img_size"], output_dir=str(out))
    table = pd.read_csv(out / "planners.csv").set_index(["planner_name", "budget"])
    assert len(table) == 1 + 3 * 2 and set(table.task) == {"reach"}
    gflop = table.gflop_per_action
    # the presets have one budget (384 rollouts a plan): gd spends all of it, fast and mppi at most that (tol may stop them)
    assert max(gflop[("fast", 1.0)], gflop[("mppi", 1.0)]) <= gflop[("gd", 1.0)] * (1 + 1e-9)
    assert gflop[("gd", 0.5)] == pytest.approx(gflop[("gd", 1.0)] / 2, rel=1e-6)
    assert gflop[("notebook", 1.0)] > gflop[("gd", 1.0)]
    assert ((table.success_low <= table.success_rate) & (table.success_rate <= table.success_high)).all()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["planners"]) == {"fast", "mppi", "gd"} and summary["reference"] == "notebook"
    assert isinstance(summary["goal_met"], bool)
    for name, h in summary["planners"].items():
        assert h["least_gflop_to_best"] in {gflop[(name, 0.5)], gflop[(name, 1.0)]}
    assert (out / "success_vs_flops.html").exists() and len(list((out / "reach").glob("episode_*.mp4"))) == 7
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == 7 and episodes.seed.nunique() == 1         # every planner on the same held-out episode


@pytest.mark.parametrize("bad, message", [(dict(planners=["cem3"]), "parameter planners=\\['cem3'\\] is invalid"),
                                          (dict(budgets=[0]), "parameter budgets=\\[0\\] is invalid"),
                                          (dict(taks=["reach"]), "unknown job parameter taks")])
def test_bench_planners_refuses_bad_parameters(tmp_path, bad, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run(tmp_path, output_dir=str(tmp_path / "never"), **bad)
    assert not (tmp_path / "never").exists()
