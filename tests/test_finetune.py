"""Fine-tuning a saved AC predictor (issue 22): `init` from a checkpoint or a released name, in the checkpoint's own form;
`freeze_blocks` keeps the first blocks and the embeddings bit-identical; extrinsics reach the predictor; the job reports
the starting and the fine-tuned figures; the memory plan against the peak memory of a real training step on a CPU.
Every size comes from the fixture manifest."""
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import papermill as pm
import pytest
import torch

from conftest import ROOT
from vjepa2wb import load_checkpoint, save_checkpoint
from vjepa2wb import train_ac as T
from vjepa2wb.checkpoints import RELEASES, WorldModel, latest_checkpoint
from vjepa2wb.core import ac_predictor_config
from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
from vjepa2wb.episodes import Episode, write_droid

EMBEDDINGS = ("predictor_embed.", "action_encoder.", "state_encoder.", "extrinsics_encoder.")   # spelled out, not imported


@pytest.fixture(scope="module")
def sizes(hp):
    return {"encoder": hp["encoder"], "ac_predictor": hp["ac_predictor"]}


@pytest.fixture(scope="module")
def official(fix, sizes):
    return load_checkpoint(fix / "ac_checkpoint.pt", **sizes)


@pytest.fixture(scope="module")
def droid(tmp_path_factory, hp):
    "Three DROID episodes of 10 frames at the fixture encoder's crop."
    root, size = tmp_path_factory.mktemp("data") / "droid", hp["encoder"]["img_size"]
    for i in range(3):
        rng = np.random.default_rng(i)
        write_droid(Episode(rng.integers(0, 255, (10, size, size, 3), dtype=np.uint8),
                            np.cumsum(rng.normal(0, 0.01, (10, 7)), 0) + [0.5, 0, 0.3, 3.1, 0, 0, 0.5], np.zeros((10, 7))),
                    root, f"ep_{i}")
    return root


@pytest.fixture(scope="module")
def cache(official, droid, tmp_path_factory, hp):
    return T.FeatureCache(official.encoder, droid, hp["encoder"]["img_size"], cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _finetune_cfg(fix, sizes, hp, **kw):
    return T.ACTrainConfig(**{"init": str(fix / "ac_checkpoint.pt"), "init_fields": sizes, "crop": hp["encoder"]["img_size"],
                              "frames": 4, "freeze_blocks": hp["ac_predictor"]["pred_depth"] - 1, "steps": 4, "batch_size": 2,
                              "checkpoint_every": 4, "lr": 1e-2, "start_lr": 1e-2, "warmup": 0.0, **kw})


def _is_frozen(name: str, k: int) -> bool:
    return name.startswith(EMBEDDINGS) or any(name.startswith(f"predictor_blocks.{i}.") for i in range(k))


def test_official_checkpoint_fine_tunes_with_its_first_blocks_bit_identical(tmp_path, fix, sizes, hp, official, cache):
    k = hp["ac_predictor"]["pred_depth"] - 1
    assert k >= 1, "the fixture predictor needs 2 blocks or more to freeze one and train one"
    cfg = _finetune_cfg(fix, sizes, hp)
    T.train_ac(cfg, official.encoder, cache, tmp_path / "run", device="cpu", progress=False)
    tuned = load_checkpoint(latest_checkpoint(tmp_path / "run")).ac_predictor
    before, after = official.ac_predictor.state_dict(), tuned.state_dict()
    assert set(before) == set(after)
    frozen = [n for n in before if _is_frozen(n, k)]
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert frozen and not set(frozen) & set(changed), f"frozen tensors moved: {sorted(set(frozen) & set(changed))}"
    assert any(n.startswith(f"predictor_blocks.{k}.") for n in changed) and "predictor_proj.weight" in changed
    # the official form is kept: not residual, no roll centre, the checkpoint's own sizes
    assert not tuned.cfg.residual and tuned.cfg.roll_center is None
    for f in ("pred_depth", "pred_embed_dim", "pred_num_heads", "embed_dim"):
        assert getattr(tuned.cfg, f) == hp["ac_predictor"][f], f
    init_from = json.loads((tmp_path / "run" / "config.json").read_text())["init_from"]
    assert init_from["source"] == str(fix / "ac_checkpoint.pt") and init_from["residual"] is False


def test_released_name_inits_through_the_cache(tmp_path, fix, sizes, hp, official, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    (server / RELEASES["ac-vitg"][0]).write_bytes((fix / "ac_checkpoint.pt").read_bytes())
    monkeypatch.setenv("VJEPA2WB_RELEASE_BASE_URL", server.as_uri())
    monkeypatch.setenv("VJEPA2WB_CACHE", str(tmp_path / "cache"))
    p, init_from = T.initial_predictor(_finetune_cfg(fix, sizes, hp, init="ac-vitg"), official.encoder.cfg)
    assert init_from["source"] == str(tmp_path / "cache" / RELEASES["ac-vitg"][0])
    for n, v in official.ac_predictor.state_dict().items():
        assert torch.equal(p.state_dict()[n], v), n
    assert p.cfg.img_size == hp["encoder"]["img_size"]          # rebuilt for this run's crop, whatever the release's


def test_init_is_checked_against_the_encoder(tmp_path, fix, sizes, hp, official):
    E = hp["encoder"]
    wrong = {"embed_dim": dict(embed_dim=E["embed_dim"] * 2, patch_size=E["patch_size"]),
             "patch_size": dict(embed_dim=E["embed_dim"], patch_size=E["patch_size"] // 2)}
    for field, kw in wrong.items():
        pc = ac_predictor_config("tiny", pred_embed_dim=64, pred_num_heads=2, pred_depth=1, img_size=E["img_size"], **kw)
        ck = save_checkpoint(WorldModel(ac_predictor=VisionTransformerPredictorAC(pc)), tmp_path / field)
        with pytest.raises(ValueError, match=f"does not fit the encoder: its AC predictor has {field} "):
            T.initial_predictor(T.ACTrainConfig(init=str(ck), crop=E["img_size"]), official.encoder.cfg)
    enc_only = save_checkpoint(WorldModel(encoder=official.encoder), tmp_path / "encoder_only")
    with pytest.raises(ValueError, match="holds no AC predictor"):
        T.initial_predictor(T.ACTrainConfig(init=str(enc_only)), official.encoder.cfg)
    depth = hp["ac_predictor"]["pred_depth"]
    with pytest.raises(ValueError, match=f"freeze_blocks={depth + 1} is invalid: the predictor has {depth} blocks"):
        T.initial_predictor(_finetune_cfg(fix, sizes, hp, freeze_blocks=depth + 1), official.encoder.cfg)
    with pytest.raises(ValueError, match="changes the shapes of init"):
        T.initial_predictor(_finetune_cfg(fix, sizes, hp, predictor={"pred_depth": depth + 1}), official.encoder.cfg)
    with pytest.raises(ValueError, match="there is no checkpoint at"):
        T.ACTrainConfig(init=str(tmp_path / "missing"))


def test_resume_continues_the_run_over_init(tmp_path, fix, sizes, hp, official, cache):
    "A resumed fine-tuning run takes the run folder's weights, optimiser and step, and ends where an unbroken run ends."
    cfg = _finetune_cfg(fix, sizes, hp, checkpoint_every=2)
    full = T.train_ac(cfg, official.encoder, cache, tmp_path / "a", device="cpu", progress=False)
    T.train_ac(cfg, official.encoder, cache, tmp_path / "b", device="cpu", progress=False)
    ck = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ck / "step_000004")
    (ck / "latest.json").write_text(json.dumps({"step": 2, "path": "step_000002"}))
    resumed = T.train_ac(cfg, official.encoder, cache, tmp_path / "b", resume=True, device="cpu", progress=False)
    assert resumed.step.tolist() == full.step.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(resumed.loss.values, full.loss.values, rtol=1e-5)
    a = load_checkpoint(latest_checkpoint(tmp_path / "a")).ac_predictor.state_dict()
    b = load_checkpoint(latest_checkpoint(tmp_path / "b")).ac_predictor.state_dict()
    for n in a:
        torch.testing.assert_close(b[n], a[n], rtol=1e-5, atol=1e-6)


def test_extrinsics_are_cached_and_reach_the_predictor(tmp_path, hp, official, droid, monkeypatch):
    size, calls = hp["encoder"]["img_size"], []
    real = T.load_episode

    def with_extrinsics(*a, **kw):                      # episodes that record the camera pose (`Episode.extrinsics`)
        ep = real(*a, **kw)
        calls.append(a)
        ep.extrinsics = np.random.default_rng(len(calls)).normal(0, 0.1, (len(ep.states), 6)) + [1.45, 0.85, 1.05, 0, 0, 0]
        return ep

    monkeypatch.setattr(T, "load_episode", with_extrinsics)
    c = T.FeatureCache(official.encoder, droid, size, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 3 and all(e is not None and e.shape == (len(s), 6) for e, (_, s) in zip(c.extrinsics, c.items))
    again = T.FeatureCache(official.encoder, droid, size, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 3                                                   # served from the cache
    for e1, e2 in zip(c.extrinsics, again.extrinsics):
        np.testing.assert_array_equal(e1, e2)
    done = next((tmp_path / "cache").glob("*/done"))
    done.write_text("ok")                                                    # an entry written before extrinsics were stored
    T.FeatureCache(official.encoder, droid, size, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 4                                                   # ... is encoded again, once

    cfg = T.ACTrainConfig(predictor={"pred_depth": 1, "use_extrinsics": True}, crop=size, frames=4, steps=2, batch_size=2,
                          checkpoint_every=2, lr=1e-2)
    p0, _ = T.initial_predictor(cfg, official.encoder.cfg)
    T.train_ac(cfg, official.encoder, c, tmp_path / "run", device="cpu", progress=False)
    tuned = load_checkpoint(latest_checkpoint(tmp_path / "run")).ac_predictor
    assert tuned.cfg.use_extrinsics and not torch.equal(tuned.extrinsics_encoder.weight, p0.extrinsics_encoder.weight)
    ev = T.evaluate(tuned, c, frames=4)
    feats, states, actions, ext = T.batch_clips(c, T.clip_index(c, 4)[:2], 4, extrinsics=True)
    assert ext.shape == (2, 4, 6)
    tf, _ = T.ac_losses(tuned, feats, states, extrinsics=ext, actions=actions)
    assert tf.item() != T.ac_losses(tuned, feats, states, extrinsics=ext + 0.5, actions=actions)[0].item()
    assert np.isfinite(ev["val_l1_model_1step"])
    bare = copy.copy(c)
    bare.extrinsics = [None, *c.extrinsics[1:]]                              # one episode that records no camera pose
    with pytest.raises(ValueError, match="1 of the 3 training episodes carry no camera extrinsics"):
        T.train_ac(cfg, official.encoder, bare, tmp_path / "no_ext", device="cpu", progress=False)
    with pytest.raises(ValueError, match="held-out episodes carry no camera extrinsics"):
        T.evaluate(tuned, bare, frames=4)


def test_optimizers():
    p = VisionTransformerPredictorAC(ac_predictor_config("tiny", pred_depth=1))
    groups = T._ac_param_groups(p, 1.0)
    assert T.make_optimizer(groups, "adamw").defaults["foreach"] is False
    assert T.make_optimizer(T._ac_param_groups(p, 1.0), "adamw_foreach").defaults["foreach"] is True
    with pytest.raises(ValueError, match="parameter optimizer='sgd' is invalid"):
        T.ACTrainConfig(optimizer="sgd")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ValueError, match="needs bitsandbytes"):
            T.ACTrainConfig(optimizer="adamw8bit")


MEASURE = r"""
import json, sys, torch
torch.set_num_threads(1)
from vjepa2wb.core import ac_predictor_config
from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
from vjepa2wb.train_ac import ACTrainConfig, _set_trainable, ac_losses, make_optimizer
from vjepa2wb.training import param_groups
cfg, frames, batch, ckpt, freeze = json.loads(sys.argv[1])
rss = lambda k: next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(k))
pc = ac_predictor_config(**cfg)
torch.manual_seed(0)
p = VisionTransformerPredictorAC(pc).train()
_set_trainable(p, ACTrainConfig(freeze_blocks=freeze, grad_checkpointing=ckpt))
opt = make_optimizer(param_groups(p), "adamw", 1e-3)
feats = torch.nn.functional.layer_norm(torch.randn(batch, frames, pc.grid ** 2, pc.embed_dim), (pc.embed_dim,))
states = torch.cumsum(torch.randn(batch, frames, 7) * 0.01, 1)
tf, ro = ac_losses(p, feats[:1], states[:1]); (tf + ro).backward(); p.zero_grad(set_to_none=True)   # warm the kernels up
base = rss("VmRSS")
open("/proc/self/clear_refs", "w").write("5")            # VmHWM := VmRSS, so VmHWM is the high-water mark of this step
tf, ro = ac_losses(p, feats, states); (tf + ro).backward(); opt.step()
print(json.dumps({"base": base, "peak": rss("VmHWM")}))
"""


def test_memory_plan_against_the_peak_of_a_training_step():
    """The plan within 2x of the resident-memory high-water mark of one training step (forward, backward, AdamW) in a
    fresh process. Glibc returns large blocks at once (MALLOC_MMAP_THRESHOLD_), so RSS follows live memory. The
    weights are resident before the step, so the step's own peak is compared with the plan less the weights."""
    cfg, frames = dict(size="tiny", pred_depth=4, img_size=128, max_num_frames=16), 8
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}

    def measured(batch, ckpt=False, freeze=0):
        r = subprocess.run([sys.executable, "-c", MEASURE, json.dumps([cfg, frames, batch, ckpt, freeze])], env=env,
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        m = json.loads(r.stdout.strip().splitlines()[-1])
        return (m["peak"] - m["base"]) / 1e9

    def planned(batch, ckpt=False, freeze=0):
        plan = T.memory_plan(ac_predictor_config(**cfg), frames, batch, grad_checkpointing=ckpt, freeze_blocks=freeze)
        return plan["total_gb"] - plan["weights_gb"], plan["activations_per_clip_gb"]

    small, big, lean = measured(2), measured(8), measured(8, ckpt=True, freeze=1)
    (p_small, per_clip), (p_big, _), (p_lean, _) = planned(2), planned(8), planned(8, ckpt=True, freeze=1)
    print(f"measured / planned GB: batch 2 {small:.4f} / {p_small:.4f}, batch 8 {big:.4f} / {p_big:.4f}, "
          f"batch 8 checkpointed with 1 frozen block {lean:.4f} / {p_lean:.4f}, per clip {(big - small) / 6:.4f} / {per_clip:.4f}")
    for got, want in ((small, p_small), (big, p_big), (lean, p_lean), ((big - small) / 6, per_clip)):
        assert want / 2 <= got <= want * 2, (got, want)
    assert lean < big / 2                                   # checkpointing and freezing do save what the plan says


def _run_job(tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / "train_ac.ipynb", tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=1800)


def test_job_fine_tunes_and_reports_the_starting_and_the_fine_tuned_figures(tmp_path, official, droid, hp):
    ck = save_checkpoint(official, tmp_path / "ac_model")          # a saved official AC checkpoint: encoder and predictor
    k, out = hp["ac_predictor"]["pred_depth"] - 1, tmp_path / "run"
    _run_job(tmp_path, encoder=str(ck), init=str(ck), freeze_blocks=k, data=str(droid), crop=hp["encoder"]["img_size"], frames=4,
             steps=2, batch_size=2, checkpoint_every=2, lr=1e-2, memory_budget_gb=1.0, cache_dir=str(tmp_path / "cache"),
             output_dir=str(out))
    s = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    for key in ("val_l1_model_1step", "val_l1_copy_last_1step", "val_l1_shuffled_actions_1step", "val_l1_model_rollout",
                "final_loss", "checkpoint", "model_vs_copy_last_1step", "shuffled_vs_true_actions_1step", "train_seconds", "encoder",
                "init_val_l1_model_1step", "init_val_l1_shuffled_actions_1step", "init_val_l1_model_rollout",
                "init_model_vs_copy_last_1step", "model_vs_init_1step", "memory_plan", "init_from"):
        assert key in s, key
    assert s["status"] == "done" and s["init_from"]["source"] == str(ck)
    assert s["model_vs_init_1step"] == pytest.approx(s["val_l1_model_1step"] / s["init_val_l1_model_1step"])
    plan = s["memory_plan"]
    assert plan["budget_gb"] == 1.0 and plan["max_batch"] >= 2 and plan["fits"] is True and plan["params"] > plan["trainable_params"] > 0
    before, after = official.ac_predictor.state_dict(), load_checkpoint(s["checkpoint"]).ac_predictor.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before if _is_frozen(n, k))
    assert any(not torch.equal(before[n], after[n]) for n in before if not _is_frozen(n, k))


def test_job_writes_the_memory_plan_before_training(tmp_path, droid, hp):
    "A run that fails in training (clips longer than any episode) has already written summary.json with its plan."
    out = tmp_path / "run"
    with pytest.raises(pm.PapermillExecutionError, match="no episode has 12 frames"):
        _run_job(tmp_path, data=str(droid), crop=hp["encoder"]["img_size"], frames=12, predictor={"pred_depth": 1}, steps=2,
                 batch_size=2, cache_dir=str(tmp_path / "cache"), output_dir=str(out))
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "training" and s["memory_plan"]["total_gb"] > 0 and s["memory_plan"]["max_batch"] is None
    assert (s["init_from"]["init"], s["init_from"]["source"], s["init_from"]["pred_depth"]) == ("auto", None, 1)
