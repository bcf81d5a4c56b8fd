"""The action-anticipation job under papermill: tiny parameters on the fixture encoder, and bad parameters refused."""
import json

import pandas as pd
import papermill as pm
import pytest

from conftest import ROOT

HEADS = ("verb", "noun", "action")


def run(tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / "anticipate.ipynb", tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=600)


def test_anticipate_job_tiny(tmp_path, fix):
    """Fixture encoder, 72 clips a split (each action once), 2 epochs: every contracted key, in range."""
    from vjepa2wb import load_checkpoint
    out = tmp_path / "run"
    run(tmp_path, encoder=str(fix / "pretrain_checkpoint.pt"), n_train=72, n_val=72, epochs=2, batch_size=24, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    classes = {"verb": 12, "noun": 8, "action": 72}
    for h in HEADS:
        for suffix in ("", "_no_predictor"):
            assert 0 <= summary[f"recall5_{h}{suffix}"] <= 100 and 0 <= summary[f"acc1_{h}{suffix}"] <= 100, (h, suffix)
        assert summary[f"num_classes_{h}"] == classes[h]
        assert summary[f"recall5_chance_{h}"] == pytest.approx(100 * min(5, classes[h]) / classes[h], abs=0.01)
        assert summary[f"predictor_minus_no_predictor_{h}"] == pytest.approx(
            summary[f"recall5_{h}"] - summary[f"recall5_{h}_no_predictor"], abs=0.02)
        assert summary[f"predictor_minus_no_predictor_{h}_se"] >= 0
    assert summary["encoder_source"] == "fixture" and summary["encoder_untrained"] is True and "RANDOM" in summary["warning"]
    assert (summary["n_train"], summary["n_val"], summary["encoder_tokens"], summary["predicted_tokens"]) == (72, 72, 32, 16)
    assert isinstance(summary["predictor_at_least_as_good"], bool)
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(metrics.probe.unique()) == ["no_predictor", "predictor"] and len(metrics) == 4
    assert (out / "curves.html").stat().st_size > 1000 and (out / "scores.html").exists()
    assert json.loads((out / "config.json").read_text())["frames"] == 4           # the encoder's own
    assert load_checkpoint(out / "probe_predictor").classifier.cfg.outputs == classes


@pytest.mark.parametrize("bad, message", [(dict(epochz=2), "unknown job parameter epochz"),
                                          (dict(n_train=0), "parameter n_train=0 is invalid"),
                                          (dict(frames=3), "parameter frames=3 is invalid: a multiple of the encoder's tubelet size 2")])
def test_anticipate_job_refuses_bad_parameters(tmp_path, fix, bad, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run(tmp_path, encoder=str(fix / "pretrain_checkpoint.pt"), output_dir=str(tmp_path / "never"), **bad)
    assert not (tmp_path / "never").exists()


def test_anticipate_job_on_a_tiny_epic_kitchens_folder(tmp_path, fix):
    """The EK100 branch end to end: both csvs, videos in the two official layouts, a missing one skipped and counted."""
    from vjepa2wb.data import SyntheticShapes, write_video
    root = tmp_path / "EPIC"
    header = "participant_id,video_id,start_frame,stop_frame,verb_class,noun_class"
    clip = SyntheticShapes("motion", n=1, frames=80, size=64)[0][0]               # 80 frames at 10 fps, 64 pixels
    for video in (root / "P01" / "videos" / "P01_01.MP4", root / "P02" / "P02_01.MP4"):
        video.parent.mkdir(parents=True)
        write_video(video, clip, fps=10, lossless=True)
    train = [f"P01,P01_01,{s},{s + 5},{v},{n}" for s, v, n in ((40, 0, 1), (50, 1, 2), (60, 0, 2), (70, 1, 1))]
    (root / "EPIC_100_train.csv").write_text("\n".join([header, *train, "P03,P03_01,40,45,0,1"]) + "\n")
    (root / "EPIC_100_validation.csv").write_text("\n".join([header, "P02,P02_01,45,50,0,1", "P02,P02_01,65,70,1,2",
                                                             "P02,P02_01,55,60,3,3"]) + "\n")      # (3, 3): unseen in training
    out = tmp_path / "run"
    run(tmp_path, encoder=str(fix / "pretrain_checkpoint.pt"), data=str(root), fps=2, n_train=8, n_val=8, epochs=1, depth=1,
        output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == str(root) and summary["n_train"] == 4 and summary["n_val"] == 2
    assert summary["skipped_clips"] == 1 and "P03_01" in summary["skipped_first"][0]
    assert summary["num_classes_action"] == 4 and all(0 <= summary[f"recall5_{h}"] <= 100 for h in HEADS)
