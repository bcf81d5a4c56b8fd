"""Job notebooks run end to end under papermill, with tiny parameters, and refuse bad ones."""
import json

import papermill as pm
import pytest

from conftest import ROOT


def run(nb, tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / nb, tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=600)


def test_bench_models_writes_summary(tmp_path):
    out = tmp_path / "bench"
    run("bench_models.ipynb", tmp_path, model_size="tiny", frames=2, img_size=64, repeats=2,
        compile=False, compile_hf=False, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("cpu_fp32_ours_eager_s", "cpu_fp32_hf_eager_s", "cpu_fp32_speedup_vs_hf_eager", "tokens"):
        assert key in summary, key
    assert summary["cpu_fp32_max_abs_diff_ours_eager"] < 1e-4        # the two models agree before they are timed
    assert summary["cpu_fp32_speedup_vs_hf_eager"] == pytest.approx(
        summary["cpu_fp32_hf_eager_s"] / summary["cpu_fp32_ours_eager_s"])
    assert json.loads((out / "config.json").read_text())["model_size"] == "tiny"
    assert (out / "timings.html").exists()


@pytest.mark.parametrize("bad, message", [(dict(frames=3), "parameter frames=3 is invalid"),
                                          (dict(model_size="enormous"), "parameter model_size='enormous' is invalid"),
                                          (dict(repeats="5"), "parameter repeats must be int")])
def test_bench_models_refuses_bad_parameters(tmp_path, bad, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run("bench_models.ipynb", tmp_path, output_dir=str(tmp_path / "never"), **bad)
    assert not (tmp_path / "never").exists()


def test_explore_masks_notebook_runs(tmp_path):
    nb = run("explore_masks.ipynb", tmp_path)
    html = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {}) or "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert html, "the panel displayed nothing"


def test_bench_sim_writes_summary(tmp_path):
    out = tmp_path / "sim"
    run("bench_sim.ipynb", tmp_path, steps=5, size=64, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_per_s"] > 0 and summary["render_fps"] > 0 and summary["bit_exact_replay"] is True


def test_collect_sim_then_load_as_clips(tmp_path):
    from vjepa2wb.episodes import RobotClips, collate_robot
    out = tmp_path / "sim"
    run("collect_sim.ipynb", tmp_path, episodes=2, size=64, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["frames"] > 0
    run("collect_sim.ipynb", tmp_path, episodes=3, size=64, output_dir=str(out))      # resumes
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2
    for layout in ("droid", "lerobot"):
        ds = RobotClips(out / layout, frames=4, fps=4.0)
        assert len(ds) == 3
        batch = collate_robot([ds[i] for i in range(len(ds))])
        assert batch["video"].shape[1:] == (4, 64, 64, 3) and batch["actions"].shape[1:] == (3, 7)
    with pytest.raises(pm.PapermillExecutionError, match="parameter episodes=0 is invalid"):
        run("collect_sim.ipynb", tmp_path, episodes=0, output_dir=str(tmp_path / "never"))


def test_explore_dataset_notebook_runs(tmp_path):
    nb = run("explore_dataset.ipynb", tmp_path)
    assert any("episodes under" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
