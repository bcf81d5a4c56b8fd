"""Pretraining: kill -9 and resume, 2 processes (DDP and FSDP2, gloo on CPU), the job notebook."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
import torch

from conftest import ROOT
from vjepa2wb import load_checkpoint
from vjepa2wb.core import write_json
from vjepa2wb.pretrain import PretrainConfig, run_pretrain

TINY = dict(model_size="tiny", encoder=dict(depth=2), predictor=dict(pred_depth=1), frames=4, crop=64, batch_size=4,
            lr=1e-3, start_lr=1e-3, warmup=0.0, ema=(0.9, 0.99))


def launch_spec(out: Path, steps: int, resume: bool) -> Path:
    cfg = PretrainConfig(**TINY, steps=steps, checkpoint_every=2)
    spec = dict(config=asdict(cfg), data="synthetic", out=str(out), resume=resume, strategy="ddp", device="cpu",
                n=32, load_size=72)
    return write_json(out.parent / f"{out.name}-launch.json", spec)


def test_resume_after_kill_9_continues_steps_schedule_and_loss(tmp_path):
    steps = 8
    reference = run_pretrain(PretrainConfig(**TINY, steps=steps, checkpoint_every=2), "synthetic", tmp_path / "ref",
                             n=32, load_size=72, device="cpu")
    out = tmp_path / "killed"
    spec = launch_spec(out, steps, resume=False)
    proc = subprocess.Popen([sys.executable, "-m", "vjepa2wb.pretrain", str(spec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while not (latest.exists() and json.loads(latest.read_text())["step"] >= 4):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < steps, "killed too late to test resuming"
    resumed = run_pretrain(PretrainConfig(**TINY, steps=steps, checkpoint_every=2), "synthetic", out, resume=True,
                           n=32, load_size=72, device="cpu")
    assert resumed.step.tolist() == list(range(steps))
    pd.testing.assert_series_equal(resumed.lr, reference.lr)
    pd.testing.assert_series_equal(resumed.momentum, reference.momentum)
    assert (resumed.loss - reference.loss).abs().max() < 1e-5, (resumed.loss.tolist(), reference.loss.tolist())
    assert not list((out / "checkpoints").glob(".*tmp*")), "a half-written checkpoint was left behind"


def listening() -> set:
    "Every listening TCP socket of this machine, as (hex address, hex port) from /proc/net."
    found = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(f).read_text().splitlines()[1:]:
            if row.split()[3] == "0A":
                found.add(tuple(row.split()[1].split(":")))
    return found


LOOPBACK = ("0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_on_cpu_listen_on_loopback_only(tmp_path, strategy):
    """2-process training (DDP and FSDP2, gloo): it trains, and every socket it opens listens on loopback only."""
    import threading
    out, result = tmp_path / strategy, {}
    before, seen = listening(), set()
    run = threading.Thread(target=lambda: result.update(metrics=run_pretrain(
        PretrainConfig(**TINY, steps=4, checkpoint_every=4), "synthetic", out, nproc=2, strategy=strategy, n=32, load_size=72, device="cpu")))
    run.start()
    while run.is_alive():
        seen |= listening() - before
        time.sleep(0.05)
    assert seen, "no socket was seen: the watch did not work"
    assert all(addr in LOOPBACK for addr, _ in seen), f"listening beyond loopback: {seen - {s for s in seen if s[0] in LOOPBACK}}"
    metrics = result["metrics"]
    assert metrics.step.tolist() == [0, 1, 2, 3] and metrics.loss.notna().all()
    checkpoints = sorted((out / "checkpoints").glob("step_*"))
    assert [c.name for c in checkpoints] == ["step_000004"]
    wm = load_checkpoint(checkpoints[0])
    assert wm.encoder is not None and wm.predictor is not None and wm.target_encoder is not None


def test_pretrain_job_notebook(tmp_path):
    out = tmp_path / "run"
    pm.execute_notebook(ROOT / "nbs" / "pretrain.ipynb", tmp_path / "out.ipynb", cwd=ROOT / "nbs", kernel_name="python3",
                        parameters=dict(steps=4, checkpoint_every=2, n_clips=16, encoder={"depth": 2, "patch_size": 8}, output_dir=str(out), data="synthetic@0.3",
                                        recipes=[dict(num_blocks=2, spatial_scale=[0.15, 0.15])]),
                        progress_bar=False, execution_timeout=1800)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("probe_acc_pretrained", "probe_acc_random", "probe_acc_motion_pretrained", "probe_acc_appearance_random",
                "final_loss", "target_std_final", "probe_margin"):
        assert key in summary, key
    assert summary["probe_noise"] == 0.3                                      # probed at the training data's noise
    assert (out / "metrics.parquet").exists() and (out / "curves.html").exists() and (out / "config.json").exists()
    recipes = json.loads((out / "config.json").read_text())["recipes"]
    assert len(recipes) == 1 and recipes[0]["num_blocks"] == 2                # the one recipe asked for
    wm = load_checkpoint(summary["checkpoint"])
    assert wm.encoder is not None and wm.encoder.cfg.patch_size == 8         # an 8x8 token grid at crop 64
    with pytest.raises(pm.PapermillExecutionError, match="parameter recipes"):
        pm.execute_notebook(ROOT / "nbs" / "pretrain.ipynb", tmp_path / "bad.ipynb", cwd=ROOT / "nbs",
                            kernel_name="python3", parameters=dict(recipes="half"), progress_bar=False)
    with pytest.raises(pm.PapermillExecutionError, match="the noise after '@' must be a number"):
        pm.execute_notebook(ROOT / "nbs" / "pretrain.ipynb", tmp_path / "bad.ipynb", cwd=ROOT / "nbs",
                            kernel_name="python3", parameters=dict(data="synthetic@lots", output_dir=str(tmp_path / "bad")),
                            progress_bar=False)
    with pytest.raises(pm.PapermillExecutionError, match="resume=True needs the output_dir or run_id"):
        pm.execute_notebook(ROOT / "nbs" / "pretrain.ipynb", tmp_path / "bad.ipynb", cwd=ROOT / "nbs",
                            kernel_name="python3", parameters=dict(resume=True), progress_bar=False)


def test_corrupt_and_short_videos_are_skipped_and_counted(tmp_path):
    from vjepa2wb.data import SyntheticShapes, write_video
    root = tmp_path / "videos"
    for cls, i in (("left", 1), ("right", 0)):
        (root / cls).mkdir(parents=True)
        write_video(root / cls / "ok.mp4", SyntheticShapes(frames=16, size=72)[i][0])
    write_video(root / "left" / "short.mp4", SyntheticShapes(frames=2, size=72)[1][0])
    (root / "right" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(512))
    metrics = run_pretrain(PretrainConfig(**TINY, steps=3, checkpoint_every=3), str(root), tmp_path / "run",
                           load_size=72, device="cpu")
    assert metrics.step.tolist() == [0, 1, 2]
    assert metrics.skipped.sum() >= 2 and metrics.loss.notna().all()
    assert (metrics.loss[metrics.skipped < 3] > 0).all(), metrics[["loss", "skipped"]]   # readable clips were trained on


def test_evidence_preset_beats_random_init(tmp_path):
    "The issue's claim, from the job as run: the `evidence` preset's encoder beats random init by 10 points."
    out = tmp_path / "evidence"
    pm.execute_notebook(ROOT / "nbs" / "pretrain.ipynb", tmp_path / "evidence.ipynb", cwd=ROOT / "nbs", kernel_name="python3",
                        parameters=dict(preset="evidence", output_dir=str(out)), progress_bar=False, execution_timeout=2400)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1200 and summary["probe_noise"] == 0.4
    assert summary["probe_acc_pretrained"] >= summary["probe_acc_random"] + 10, summary


def test_nonfinite_loss_never_steps_and_stops_pretraining(tmp_path, monkeypatch):
    "A loss that turns NaN takes no optimiser step (nor EMA update); after MAX_NONFINITE_STEPS in a row the run stops, naming them."
    import vjepa2wb.pretrain as P
    from vjepa2wb.data import SyntheticShapes
    from vjepa2wb.training import MAX_NONFINITE_STEPS
    from vjepa2wb.world_model import NonFiniteError
    real = P.jepa_loss
    def nan_loss(*args, **kwargs):
        loss, info = real(*args, **kwargs)
        return loss * float("nan"), info
    monkeypatch.setattr(P, "jepa_loss", nan_loss)
    data = SyntheticShapes("motion", n=8, frames=4, size=72)
    with pytest.raises(NonFiniteError, match=f"for {MAX_NONFINITE_STEPS} steps in a row \\(steps 0-2\\)"):
        P.pretrain(PretrainConfig(**TINY, steps=6, checkpoint_every=2), data, tmp_path / "run", device="cpu", progress=False)
    torch.manual_seed(0)                                          # the checkpoint of step 2 holds the untouched initial weights
    wm = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000002")
    fresh = P.VisionTransformer(PretrainConfig(**TINY).model_configs()[0])
    for name in ("encoder", "target_encoder"):
        for k, v in getattr(wm, name).state_dict().items():
            assert torch.isfinite(v).all() and torch.equal(v, fresh.state_dict()[k]), (name, k)
    assert pd.read_parquet(tmp_path / "run" / "metrics.parquet").status.tolist() == ["non-finite"] * 2
