"""The probe job (nbs/probe.ipynb) under papermill: tiny runs write the contracted summary; bad parameters are refused."""
import json

import pandas as pd
import papermill as pm
import pytest

from conftest import ROOT

TOP1 = ("top1_pretrained", "top1_random", "top1_frame_average", "top1_chance")
TINY = dict(n_train=16, n_val=8, frames=4, epochs=2, depth=1, clips=2, views=2)


def run(tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / "probe.ipynb", tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=1800)


def test_probe_job_embedded_benchmark_tiny(tmp_path):
    """Both synthetic tasks, the three baselines and chance, confusion, curves, and the loud untrained warning."""
    out = tmp_path / "probe"
    run(tmp_path, encoder="fixture", output_dir=str(out), **TINY)
    summary = json.loads((out / "summary.json").read_text())
    for key in TOP1:
        assert set(summary[key]) == {"motion", "appearance"}, key
        assert all(0 <= v <= 100 for v in summary[key].values()), (key, summary[key])
    assert summary["top1_chance"] == {"motion": 25.0, "appearance": 25.0}          # balanced classes: the majority guess
    for task in ("motion", "appearance"):
        m = summary["confusion"][task]["matrix"]
        assert len(summary["confusion"][task]["classes"]) == 4 and len(m) == 4 and all(len(r) == 4 for r in m)
        assert sum(map(sum, m)) == summary["n_val"][task] == 8
        diag = sum(m[i][i] for i in range(4))
        assert summary["top1_pretrained"][task] == pytest.approx(100 * diag / 8, abs=0.01)   # the matrix is the encoder under test's
    assert summary["skipped_samples"] == 0 and summary["skipped_reasons"] == {}
    assert summary["encoder_trained"] is False and "UNTRAINED" in summary["warning"] and "fixture" in summary["encoder_source"]
    assert isinstance(summary["motion_goal_met"], bool)
    for key in ("curves_html", "confusion_html"):
        assert summary[key].endswith(".html") and (out / summary[key].rsplit("/", 1)[1]).stat().st_size > 1000
    # each task's trained probe is saved, and reloads to the same class count
    from vjepa2wb import load_checkpoint
    assert summary["encoder_spec"] == "fixture" and sorted(summary["probes"]) == ["appearance", "motion"]
    assert all(load_checkpoint(path).classifier.cfg.num_classes == 4 for path in summary["probes"].values())
    curves = pd.read_parquet(out / "metrics.parquet")
    assert len(curves) == 2 * 3 * TINY["epochs"] and set(curves.probe) == {"pretrained", "random", "frame_average"}
    config = json.loads((out / "config.json").read_text())
    assert config["clips"] == 2 and config["views"] == 2 and config["encoder_config"]["embed_dim"] == 64


def test_probe_job_on_a_checkpoint_one_task(tmp_path):
    """A checkpoint is a trained encoder (no warning); synthetic:motion runs one task."""
    from vjepa2wb import save_checkpoint
    from vjepa2wb.world_model import fixture_world_model
    ckpt = save_checkpoint(fixture_world_model(), tmp_path / "model")
    out = tmp_path / "probe"
    run(tmp_path, encoder=str(ckpt), data="synthetic:motion", output_dir=str(out), **TINY)
    summary = json.loads((out / "summary.json").read_text())
    assert all(set(summary[k]) == {"motion"} for k in TOP1)
    assert summary["encoder_trained"] is True and summary["warning"] is None and str(ckpt) in summary["encoder_source"]


@pytest.mark.parametrize("bad, message", [
    (dict(epoch=3), "unknown job parameter epoch"),                                  # a misspelled -p
    (dict(encoder="random:enormous"), "parameter encoder='random:enormous' is invalid"),
    (dict(encoder="/no/such/checkpoint.pt"), "parameter encoder='/no/such/checkpoint.pt' is invalid"),
    (dict(data="synthetic:colour"), "unknown synthetic dataset"),
    (dict(data="/no/such/videos.csv"), "parameter data='/no/such/videos.csv' is invalid"),
    (dict(val_data="val.csv"), "parameter val_data='val.csv' is invalid"),            # the embedded benchmark has its own
    (dict(clips=0), "parameter clips=0 is invalid"),
    (dict(lr="fast"), "parameter lr must be float"),
    (dict(encoder="fixture", frames=5), "parameter frames=5 is invalid: a multiple of the encoder's tubelet size 2"),
    (dict(encoder="fixture", num_heads=5), "parameter num_heads=5 is invalid: must divide the encoder's width 64"),
])
def test_probe_job_refuses_bad_parameters(tmp_path, bad, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run(tmp_path, output_dir=str(tmp_path / "never"), **bad)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_probe_job_defaults_motion_needs_time(tmp_path):
    """The real defaults (on the fixture encoder, whatever outputs/ holds): the video probe beats the frame average on motion by 20+."""
    out = tmp_path / "probe"
    run(tmp_path, encoder="fixture", output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["video_minus_frame_average"]["motion"] >= 20 and summary["motion_goal_met"] is True
    assert summary["top1_pretrained"]["appearance"] > summary["top1_chance"]["appearance"] + 20


def test_probe_job_on_class_folders_counts_skipped(tmp_path):
    """Real video (a folder per class, via eval_data): one task named after the data; unreadable videos are counted with reasons."""
    from vjepa2wb.data import SyntheticShapes, write_video
    for split, seed, n in (("train", 0, 8), ("val", 1000, 4)):
        ds = SyntheticShapes("motion", n=n, frames=12, size=64, seed=seed)
        for i in range(n):
            folder = tmp_path / "shapes" / split / ds.classes[ds[i][1]]
            folder.mkdir(parents=True, exist_ok=True)
            write_video(folder / f"{i}.mp4", ds[i][0], lossless=True)
    (tmp_path / "shapes" / "val" / "left" / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "probe"
    run(tmp_path, encoder="fixture", data=str(tmp_path / "shapes" / "train"), val_data=str(tmp_path / "shapes" / "val"),
        frame_step=2, output_dir=str(out), **TINY)
    summary = json.loads((out / "summary.json").read_text())
    assert all(set(summary[k]) == {"shapes"} for k in TOP1) and "motion_goal_met" not in summary
    assert summary["skipped_samples"] == 1 and summary["skipped_reasons"] == {"unreadable": 1}
    assert summary["n_train"] == {"shapes": 8} and summary["n_val"] == {"shapes": 4}
    assert summary["confusion"]["shapes"]["classes"] == ["down", "left", "right", "up"]        # the folders, sorted
