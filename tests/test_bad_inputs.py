"""Bad input, in one place: each case, the input, and the refusal it gets.

What is refused at load, what is skipped and counted, what never reaches the arm, and which job
parameters stop a job before any work. The README's "What the workbench promises" is this file in prose.
"""
import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from vjepa2wb import CheckpointError, load_checkpoint, save_checkpoint
from vjepa2wb.arm import SimArm, check_action
from vjepa2wb.planning import run_mpc
from vjepa2wb.world_model import NonFiniteError, fixture_world_model

FAST = {"samples": 8, "iterations": 1, "topk": 2}


def job_notebooks() -> list[str]:
    "Every notebook with a papermill parameters cell."
    found = []
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        cells = json.loads(p.read_text())["cells"]
        if any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
            found.append(p.name)
    return found


# --- what is refused at load

def _pretrain(fix) -> dict:
    return torch.load(fix / "pretrain_checkpoint.pt", map_location="cpu", weights_only=True)


def _poison(t: torch.Tensor, value=float("nan")) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


def _official_nan(fix, tmp_path, hp) -> Path:
    ck = _pretrain(fix)
    k = "module.backbone.blocks.0.attn.qkv.weight"
    torch.save(dict(ck, encoder=dict(ck["encoder"], **{k: _poison(ck["encoder"][k])})), tmp_path / "nan.pt")
    return tmp_path / "nan.pt"


def _hf_inf(fix, tmp_path, hp) -> Path:
    d = tmp_path / "hf"
    shutil.copytree(fix / "hf" / "vjepa2_model", d)
    sd = load_file(d / "model.safetensors")
    sd["encoder.layernorm.weight"] = _poison(sd["encoder.layernorm.weight"], float("inf"))
    save_file(sd, d / "model.safetensors")
    return d


def _ours_nan(fix, tmp_path, hp) -> Path:
    wm = load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=hp["predictor"])
    d = save_checkpoint(wm, tmp_path / "ours")
    sd = load_file(d / "model.safetensors")
    sd["predictor.predictor_proj.bias"] = _poison(sd["predictor.predictor_proj.bias"])
    save_file(sd, d / "model.safetensors")
    return d


@pytest.mark.parametrize("make, tensor", [
    (_official_nan, "encoder.blocks.0.attn.qkv.weight"),   # official .pt, one NaN in the encoder
    (_hf_inf, "encoder.norm.weight"),                      # Hugging Face directory, one inf
    (_ours_nan, "predictor.predictor_proj.bias"),          # our safetensors format, one NaN
])
def test_nonfinite_weights_are_refused_in_every_format(fix, tmp_path, hp, make, tensor):
    """Case: one NaN or inf in a weight. Expected: CheckpointError naming the file and the tensor;
    allow_nonfinite=True loads it for inspection."""
    path = make(fix, tmp_path, hp)
    kw = dict(encoder=hp["encoder"], predictor=hp["predictor"]) if path.suffix == ".pt" else {}
    with pytest.raises(CheckpointError, match=rf"{path}: {tensor} holds 1 non-finite"):
        load_checkpoint(path, **kw)
    load_checkpoint(path, **kw, allow_nonfinite=True)


def _tiny_ac():
    from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
    from vjepa2wb.core import ac_predictor_config
    return VisionTransformerPredictorAC(ac_predictor_config("tiny", pred_depth=1, img_size=32))


def _two_training_checkpoints(out: Path):
    from vjepa2wb.checkpoints import WorldModel
    from vjepa2wb.training import save_training_checkpoint
    for step in (2, 4):
        torch.manual_seed(step)
        save_training_checkpoint(out, step, WorldModel(ac_predictor=_tiny_ac()), {"step": step}, {},
                                 pd.DataFrame(dict(step=range(step))), keep=2)


def test_nonfinite_training_checkpoint_is_not_resumed(tmp_path):
    """Case: the latest training checkpoint holds a NaN weight, then both do.
    Expected: resume falls back to the earlier one; with both poisoned, CheckpointError naming the tensor."""
    from vjepa2wb.training import resume
    _two_training_checkpoints(tmp_path)
    for n, step in enumerate(("step_000004", "step_000002")):
        f = tmp_path / "checkpoints" / step / "model.safetensors"
        sd = load_file(f)
        sd["ac_predictor.predictor_proj.bias"] = _poison(sd["ac_predictor.predictor_proj.bias"])
        save_file(sd, f)
        if n == 0:
            assert resume(tmp_path, {"ac_predictor": _tiny_ac()})[0] == 2
    with pytest.raises(CheckpointError, match=r"no checkpoint under .* ac_predictor\.predictor_proj\.bias holds 1 non-finite"):
        resume(tmp_path, {"ac_predictor": _tiny_ac()})


def test_empty_pt_file(tmp_path):
    """Case: a 0-byte .pt file (it used to raise IndexError from inside the error handler)."""
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.pt")


@pytest.mark.parametrize("data", [
    bytes(range(256)) * 16,                            # bytes that are no pickle
    pickle.dumps({"encoder": {"w": 1}}),               # a raw pickle, not torch.save
    pickle.dumps({"encoder": os.system}),              # a raw pickle referencing code
], ids=["random-bytes", "raw-pickle", "raw-pickle-global"])
def test_no_checkpoint_never_advises_weights_only_false(tmp_path, data):
    """Case: a .pt file that is no torch checkpoint. Expected: 'not a checkpoint', naming the file, and never
    torch's advice to retry with weights_only=False."""
    (tmp_path / "x.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"x\.pt is not a checkpoint") as e:
        load_checkpoint(tmp_path / "x.pt")
    assert "weights_only" not in str(e.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_refusal_names_the_global_exactly(tmp_path):
    """Case: a torch.save file whose pickle calls os.system. Expected: the global named exactly (not 'posix.system whose')."""
    torch.save({"encoder": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: its pickle references posix\.system, which could run code") as e:
        load_checkpoint(tmp_path / "evil.pt")
    assert "whose" not in str(e.value) and "weights_only" not in str(e.value)


def _ours_dir(fix, hp, tmp_path) -> Path:
    wm = load_checkpoint(fix / "probe_checkpoint.pt", probe=hp["probe"])
    return save_checkpoint(wm, tmp_path / "ours")


def _edit_config(d: Path, edit) -> Path:
    conf = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(edit(conf) if callable(edit) else edit)
    return d


@pytest.mark.parametrize("edit, match", [
    ("{not json", r"config\.json is not readable JSON"),
    ("[1, 2]", r"config\.json holds a JSON list"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "components"}), r"config\.json has no 'components'"),
    (lambda c: json.dumps(dict(c, components={"probe": dict(c["components"]["probe"], depht=2)})),
     r"config\.json: unknown ProbeConfig field\(s\) \['depht'\]"),
    (lambda c: json.dumps(dict(c, components={"teacher": {}})), r"config\.json: unknown component 'teacher'"),
], ids=["invalid-json", "list", "no-components", "unknown-field", "unknown-component"])
def test_bad_config_json_of_our_format(fix, hp, tmp_path, edit, match):
    """Case: our checkpoint folder with a damaged config.json. Expected: CheckpointError naming config.json."""
    d = _edit_config(_ours_dir(fix, hp, tmp_path), edit)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(d)


def test_hf_config_without_crop_size(fix, tmp_path):
    """Case: a Hugging Face VJEPA2 directory whose config.json lacks crop_size."""
    d = tmp_path / "hf"
    shutil.copytree(fix / "hf" / "vjepa2_model", d)
    _edit_config(d, lambda c: json.dumps({k: v for k, v in c.items() if k != "crop_size"}))
    with pytest.raises(CheckpointError, match=r"hf/config\.json: the Hugging Face config lacks 'crop_size'"):
        load_checkpoint(d)


def test_int64_weight_where_a_float_is_needed(fix, hp, tmp_path):
    """Case: an official file whose encoder qkv weight is int64."""
    ck = _pretrain(fix)
    k = "module.backbone.blocks.0.attn.qkv.weight"
    torch.save(dict(ck, encoder=dict(ck["encoder"], **{k: ck["encoder"][k].long()})), tmp_path / "int.pt")
    with pytest.raises(CheckpointError, match=r"int\.pt: encoder\.blocks\.0\.attn\.qkv\.weight is torch\.int64 in the file, "
                                              r"but the architecture needs a floating-point tensor"):
        load_checkpoint(tmp_path / "int.pt", encoder=hp["encoder"], predictor=hp["predictor"])


@pytest.mark.parametrize("extra", [torch.zeros(3), [1, 2]], ids=["tensor", "list"])
def test_extra_top_level_entry_warns_and_names_it(fix, hp, tmp_path, extra):
    """Case: an official file with an extra top-level tensor or list. Expected: a warning naming it; it is in wm.ignored."""
    torch.save(dict(_pretrain(fix), stray=extra), tmp_path / "extra.pt")
    with pytest.warns(UserWarning, match=r"extra\.pt: ignoring the top-level entry 'stray'"):
        wm = load_checkpoint(tmp_path / "extra.pt", encoder=hp["encoder"], predictor=hp["predictor"])
    assert "stray" in wm.ignored


@pytest.mark.parametrize("damaged", ["", "{",   # these two were handled before; kept as guards
                                     "null", "[]", '{"path": 5}', '{"path": "/etc"}', '{"path": "step_000009"}'])
def test_damaged_latest_json_falls_back_on_resume(tmp_path, damaged):
    """Case: latest.json is damaged (invalid JSON, another type, a path naming no checkpoint folder).
    Expected: a warning, and resume loads the newest kept checkpoint folder."""
    from vjepa2wb.training import resume
    _two_training_checkpoints(tmp_path)
    (tmp_path / "checkpoints" / "latest.json").write_text(damaged)
    with pytest.warns(UserWarning, match="latest.json is unreadable"):
        assert resume(tmp_path, {"ac_predictor": _tiny_ac()})[0] == 4


def test_leftovers_of_a_killed_save_are_cleaned_on_resume(tmp_path):
    """Case: a kill during a save left .latest.json.tmp-PID (PID dead) and a .step_*.tmp folder.
    Expected: resume removes them; a live process's temporary file is kept."""
    from vjepa2wb.training import resume
    _two_training_checkpoints(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ck_dir = tmp_path / "checkpoints"
    stale = [ck_dir / f".latest.json.tmp-{dead.pid}", tmp_path / f".metrics.parquet.tmp-{dead.pid}"]
    for p in stale:
        p.write_text("{")
    (ck_dir / ".step_000006.tmp").mkdir()
    live = ck_dir / f".latest.json.tmp-{os.getpid()}"
    live.write_text("{")
    assert resume(tmp_path, {"ac_predictor": _tiny_ac()})[0] == 4
    assert not any(p.exists() for p in stale) and not (ck_dir / ".step_000006.tmp").exists()
    assert live.exists()


# --- what is skipped and counted

def _episode(T: int = 12, size: int = 32, seed: int = 0):
    "A tiny smooth episode (as nbs/15_episodes builds them): a brightness ramp, a random walk of states."
    from vjepa2wb.episodes import Episode
    rng = np.random.default_rng(seed)
    states = np.cumsum(rng.normal(0, 0.01, (T, 7)), 0) + [0.5, 0, 0.3, 3.1, 0, 0, 0.5]
    frames = np.repeat(np.linspace(0, 255, T, dtype=np.uint8)[:, None, None, None], size * size * 3).reshape(T, size, size, 3)
    return Episode(frames, states, rng.normal(0, 0.01, (T, 7)), 4.0)


def _droid(root: Path, n: int) -> list[Path]:
    from vjepa2wb.episodes import write_droid
    return [write_droid(_episode(seed=i), root, f"ep_{i:03d}") for i in range(n)]


def _encoder():
    from vjepa2wb.core import encoder_config
    from vjepa2wb.encoder import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(encoder_config("tiny", depth=1, img_size=32, num_frames=2))


def test_nan_states_skip_the_episode_with_its_reason(tmp_path):
    """Case: three rows of cartesian_position are NaN in one DROID episode.
    Expected: that episode is skipped with its reason and counted; the other is trained on."""
    import h5py
    from vjepa2wb.data import Skipped
    from vjepa2wb.episodes import RobotClips
    from vjepa2wb.train_ac import FeatureCache
    bad, good = _droid(tmp_path / "droid", 2)
    with h5py.File(bad / "trajectory.h5", "r+") as h:
        h["observation/robot_state/cartesian_position"][2:5] = np.nan
    cache = FeatureCache(_encoder(), tmp_path / "droid", crop=32, cache_dir=tmp_path / "cache", progress=False)
    assert len(cache) == 1 and len(cache.skipped) == 1
    where, reason = cache.skipped[0]
    assert where == str(bad) and reason.startswith("non-finite states: 3 of 12 frames"), reason
    s = RobotClips(tmp_path / "droid", frames=4)[0]
    assert isinstance(s, Skipped) and s.reason.startswith("non-finite states"), s


def test_nonfinite_loss_never_steps_and_stops_the_run(tmp_path):
    """Case: the training clips hold NaN states (a cache written before episodes were checked), so every loss is NaN.
    Expected: no optimiser step is taken, the run stops after MAX_NONFINITE_STEPS steps in a row, naming them,
    and the finite checkpoints of the run before it are kept."""
    from dataclasses import replace
    from vjepa2wb import load_checkpoint
    from vjepa2wb.checkpoints import kept_checkpoints
    from vjepa2wb.train_ac import ACTrainConfig, FeatureCache, train_ac
    from vjepa2wb.training import MAX_NONFINITE_STEPS
    from vjepa2wb.world_model import NonFiniteError
    _droid(tmp_path / "droid", 1)
    enc = _encoder()
    cache = FeatureCache(enc, tmp_path / "droid", crop=32, cache_dir=tmp_path / "cache", progress=False)
    cfg = ACTrainConfig(predictor=dict(pred_depth=1), frames=4, crop=32, steps=4, batch_size=2, checkpoint_every=2, keep_checkpoints=1)
    train_ac(cfg, enc, cache, tmp_path / "run", device="cpu", progress=False)
    before = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_000004").ac_predictor.state_dict()
    feats, states = cache.items[0]
    cache.items[0] = (feats, np.full_like(states, np.nan))
    cfg = replace(cfg, steps=12)
    with pytest.raises(NonFiniteError, match=f"{MAX_NONFINITE_STEPS} steps in a row"):
        train_ac(cfg, enc, cache, tmp_path / "run", resume=True, device="cpu", progress=False)
    for ck in kept_checkpoints(tmp_path / "run"):          # finite, and the weights of step 4: no step was taken
        sd = load_checkpoint(ck).ac_predictor.state_dict()
        assert all(torch.isfinite(v).all() and torch.equal(v, before[k]) for k, v in sd.items()), ck


def test_save_training_checkpoint_refuses_nonfinite_weights(tmp_path):
    """Case: a NaN weight (or optimiser moment) reaches a checkpoint.
    Expected: NonFiniteError naming the tensor; nothing written, the last finite checkpoint kept even with keep=1."""
    from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
    from vjepa2wb.checkpoints import WorldModel, latest_checkpoint
    from vjepa2wb.core import ac_predictor_config
    from vjepa2wb.training import save_training_checkpoint
    from vjepa2wb.world_model import NonFiniteError
    net = VisionTransformerPredictorAC(ac_predictor_config("tiny", pred_depth=1, img_size=32))
    rows = pd.DataFrame(dict(step=[0, 1], loss=[1.0, 1.0]))
    save_training_checkpoint(tmp_path, 2, WorldModel(ac_predictor=net), {}, {}, rows, keep=1)
    with torch.no_grad():
        net.predictor_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"ac_predictor\.predictor_proj\.weight"):
        save_training_checkpoint(tmp_path, 4, WorldModel(ac_predictor=net), {}, {}, rows, keep=1)
    with torch.no_grad():
        net.predictor_proj.weight[0, 0] = 0.0
    with pytest.raises(NonFiniteError, match=r"optimizer\.state\.0\.exp_avg"):
        save_training_checkpoint(tmp_path, 4, WorldModel(ac_predictor=net), {"state": {0: {"exp_avg": torch.tensor([np.inf])}}},
                                 {}, rows, keep=1)
    assert latest_checkpoint(tmp_path).name == "step_000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step_000002"]


def test_unreadable_episodes_are_counted_with_reasons_and_split_after(tmp_path):
    """Case: 9 episodes, of which 7 have a corrupt video.
    Expected: the cache keeps the 2 readable (`episodes`), lists the 7 with their reasons, and the split holds one
    readable episode on each side."""
    from vjepa2wb.episodes import CAMERA, find_episodes
    from vjepa2wb.train_ac import FeatureCache, split_episodes
    paths = _droid(tmp_path / "droid", 9)
    for p in paths[2:]:
        (p / "recordings" / "MP4" / f"{CAMERA}.mp4").write_bytes(b"garbage")
    found = find_episodes(tmp_path / "droid")
    cache = FeatureCache(_encoder(), found, crop=32, cache_dir=tmp_path / "cache", progress=False)
    assert (len(found), len(cache.episodes), len(cache.skipped)) == (9, 2, 7)
    assert all(r.startswith("unreadable: ") for _, r in cache.skipped)
    train, val = split_episodes(cache.episodes, 0.2, 0)
    assert (len(train), len(val)) == (1, 1) and set(train + val) == set(cache.episodes)


def test_pretrain_steps_without_clips_are_counted_not_logged_as_loss(tmp_path):
    """Case: pretraining on two DROID episodes, one with a corrupt video, one clip a step: half the steps have no clip.
    Expected: those steps log no loss (NaN, status 'no clips'), take no step, and the skipped episode's reason is in
    skipped.json."""
    from vjepa2wb.episodes import CAMERA
    from vjepa2wb.pretrain import EpisodeVideos, PretrainConfig, pretrain
    bad, _ = _droid(tmp_path / "droid", 2)
    (bad / "recordings" / "MP4" / f"{CAMERA}.mp4").write_bytes(b"garbage")
    cfg = PretrainConfig(model_size="tiny", encoder=dict(depth=1), predictor=dict(pred_depth=1), frames=4, crop=32, batch_size=1,
                         steps=4, checkpoint_every=4, warmup=0.0)
    m = pretrain(cfg, EpisodeVideos(tmp_path / "droid", frames=4, size=32), tmp_path / "run", device="cpu", progress=False)
    empty = m[m.skipped == 1]
    assert len(empty) == 2 and empty.loss.isna().all() and (empty.status == "no clips").all(), m
    assert m[m.skipped == 0].loss.notna().all() and (m[m.skipped == 0].status == "stepped").all()
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert list(skipped) == [str(bad)] and skipped[str(bad)].startswith("unreadable: ")


def test_droid_folder_without_trajectory_is_skipped_not_lost(tmp_path):
    """Case: a DROID episode folder whose trajectory.h5 is missing.
    Expected: it is still found, and reading it skips it with a reason that names the missing file."""
    from vjepa2wb.data import Skipped
    from vjepa2wb.episodes import find_episodes, load_episode
    lost, _ = _droid(tmp_path / "droid", 2)
    (lost / "trajectory.h5").unlink()
    found = find_episodes(tmp_path / "droid")
    assert [p for _, p, _ in found] == [str(lost), str(_)]
    s = load_episode(*found[0])
    assert isinstance(s, Skipped) and "trajectory.h5" in s.reason, s


def test_truncated_lerobot_parquet_is_skipped_against_meta(tmp_path):
    """Case: a LeRobot v2.1 episode parquet cut to half its rows.
    Expected: the episode is skipped, the reason gives the file's rows and the length meta/episodes.jsonl records."""
    from vjepa2wb.data import Skipped
    from vjepa2wb.episodes import Episode, load_episode, write_lerobot
    for i in range(2):
        write_lerobot(_episode(seed=i), tmp_path / "lerobot")
    data = tmp_path / "lerobot" / "data" / "chunk-000" / "episode_000001.parquet"
    data.write_bytes(pd.read_parquet(data).iloc[:6].to_parquet(index=False))
    assert isinstance(load_episode("lerobot", str(tmp_path / "lerobot"), 0), Episode)
    s = load_episode("lerobot", str(tmp_path / "lerobot"), 1)
    assert isinstance(s, Skipped) and s.reason.startswith("truncated: ") and "holds 6 rows" in s.reason and "length 12" in s.reason, s


def test_truncated_npz_names_the_file(tmp_path):
    """Case: an episode .npz (the official example's layout) truncated to half its bytes.
    Expected: no bare BadZipFile: find_episodes lists it, and reading it is a ValueError / skip that names the file."""
    from vjepa2wb.data import Skipped
    from vjepa2wb.episodes import find_episodes, load_episode, read_npz
    ep = _episode()
    path = tmp_path / "traj.npz"
    np.savez(path, observations=ep.frames[None], states=ep.states[None])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = find_episodes(path)
    assert found == [("npz", str(path), 0)]
    with pytest.raises(ValueError, match="traj.npz"):
        read_npz(path)
    s = load_episode(*found[0])
    assert isinstance(s, Skipped) and "traj.npz" in s.reason and s.reason.startswith("unreadable: "), s


# --- what never reaches the arm

@pytest.mark.parametrize("action, refusal", [
    (np.array([0.01 + 1j, 0, 0, 0, 0, 0, 0]), "real numbers .* got dtype complex128"),
    (np.ones(7, dtype=bool), "real numbers .* got dtype bool"),
    (["0.01", "0", "0", "0", "0", "0", "0"], "real numbers .* got dtype <U4"),
    ([0, 0, float("nan"), 0, 0, 0, 0], "NaN or inf"),
    ([0, 0, 0, 0, 0, 0, float("inf")], "NaN or inf"),
    (np.zeros(6), r"shape \(7,\)"),
    (np.zeros((1, 7)), r"shape \(7,\)"),
])
def test_arm_refuses_bad_commands(action, refusal):
    with pytest.raises(ValueError, match=refusal):
        check_action(action)


@pytest.fixture(scope="module")
def arm():
    with SimArm(width=64, height=64) as a:
        yield a


def poisoned(part: str, value: float, everywhere: bool = True):
    "The fixture world model with `part`'s weights (all, or one value) set to `value`."
    wm = copy.deepcopy(fixture_world_model())
    with torch.no_grad():
        for p in getattr(wm, part).parameters():
            (p if everywhere else p.view(-1)[:1]).fill_(value)
            if not everywhere:
                break
    return wm


@pytest.mark.parametrize("case, refusal", [
    ("NaN predictor", "the energies of CEM iteration 0"),
    ("one inf predictor weight", "is not finite"),
    ("NaN encoder", "the encoder's tokens"),
    ("NaN state", "the arm's state"),
])
def test_a_non_finite_plan_is_never_executed(arm, case, refusal):
    wm = {"NaN predictor": lambda: poisoned("ac_predictor", float("nan")),
          "one inf predictor weight": lambda: poisoned("ac_predictor", float("inf"), everywhere=False),
          "NaN encoder": lambda: poisoned("encoder", float("nan"))}.get(case, fixture_world_model)()
    goal = arm.reset(1).frame
    obs = arm.reset(0)
    before = arm.state().copy()
    if case == "NaN state":
        obs.state = np.full(7, np.nan)
    log = []
    with pytest.raises(NonFiniteError, match=refusal):
        run_mpc(arm, wm, obs, [goal], FAST, max_steps=3, on_step=log.append)
    assert np.array_equal(arm.state(), before), "the arm moved"
    assert [r["step"] for r in log] == [0] and refusal.split(" is")[0] in log[0]["refused"]


# --- jobs: parameters and folders

def run(nb, tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / nb, tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=600)


def test_every_job_is_checked():
    assert len(job_notebooks()) >= 10 and {"train_ac.ipynb", "pretrain.ipynb", "robot_session.ipynb"} <= set(job_notebooks())


@pytest.mark.parametrize("nb", job_notebooks())
def test_a_misspelled_parameter_stops_the_job(tmp_path, nb):
    with pytest.raises(pm.PapermillExecutionError, match="unknown job parameter max_stepz: this job takes"):
        run(nb, tmp_path, max_stepz=1)
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def fixture_checkpoint(tmp_path_factory):
    from vjepa2wb import save_checkpoint
    return save_checkpoint(fixture_world_model(), tmp_path_factory.mktemp("ckpt") / "ac_model")


def test_robot_session_refuses_a_used_output_folder(tmp_path, fixture_checkpoint):
    out = tmp_path / "session"
    out.mkdir()
    (out / "steps.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(pm.PapermillExecutionError, match="already holds a run"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(fixture_checkpoint), output_dir=str(out))
    assert (out / "steps.jsonl").read_text() == '{"step": 0}\n' and sorted(p.name for p in out.iterdir()) == ["steps.jsonl"]


def test_robot_session_checks_its_checkpoint_before_writing(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    with pytest.raises(pm.PapermillExecutionError):
        run("robot_session.ipynb", tmp_path, checkpoint=str(bad), output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_pretrain_refuses_missing_data_before_writing(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="parameter data=.*missing.* neither a synthetic name"):
        run("pretrain.ipynb", tmp_path, data=str(tmp_path / "missing"), output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_robot_session_refuses_a_nan_checkpoint_before_any_step(tmp_path, fixture_checkpoint):
    """The issue's repro: a checkpoint whose AC predictor is NaN. Refused at load: non-zero exit, no step, nothing written."""
    bad = tmp_path / "nan_model"
    shutil.copytree(fixture_checkpoint, bad)
    sd = load_file(bad / "model.safetensors")
    key = next(k for k in sd if k.startswith("ac_predictor.") and sd[k].is_floating_point())
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, bad / "model.safetensors", metadata={"format": "vjepa2wb"})
    with pytest.raises(pm.PapermillExecutionError, match=f"{key} holds .* non-finite"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(bad), output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
