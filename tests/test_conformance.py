"""Every output of the conformance fixtures, reproduced through load_checkpoint and the contracted calls.

Sizes come from manifest.json and the stored tensors, never from this file."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vjepa2wb import (anticipate, class_mean_recall, compute_new_pose, load_checkpoint, poses_to_diff, poses_to_diffs,
                      sigmoid_focal_loss)
from vjepa2wb.ac_predictor import frame_causal_mask
from vjepa2wb.encoder import image_to_clip


def gather(tokens, idx):
    return tokens.gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1]))


@pytest.fixture(scope="module")
def pretrain(fix, hp):
    return load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=hp["predictor"])


@pytest.fixture(scope="module")
def enc_io(fix):
    return load_file(fix / "encoder_io.safetensors")


@torch.no_grad()
def test_encoder_both_weights_all_inputs(pretrain, enc_io, expect, hp):
    f = "encoder_io.safetensors"
    expect(pretrain.target_encoder(enc_io["video"]), f, "target_encoder_video_out")
    expect(pretrain.encoder(enc_io["video"]), f, "encoder_video_out")
    tubelet, frames = hp["encoder"]["tubelet_size"], hp["encoder"]["num_frames"]
    expect(pretrain.target_encoder(image_to_clip(enc_io["image"], tubelet)), f, "target_encoder_image_tubelet_out")
    expect(pretrain.target_encoder(image_to_clip(enc_io["image"], frames)), f, "target_encoder_image_clip_out")
    # the two weight sets really differ, so the test tells them apart
    assert (pretrain.target_encoder(enc_io["video"]) - pretrain.encoder(enc_io["video"])).abs().max() > 1e-2


@torch.no_grad()
def test_masked_encoder_and_predictor_every_variant(fix, pretrain, enc_io, expect, manifest):
    masks, f = load_file(fix / "masks.safetensors"), "predictor_io.safetensors"
    io = load_file(fix / f)
    full = enc_io["video"]
    for j in range(len(manifest["masks"]["mask_cfgs"])):
        mc, mt = masks[f"masks_enc_m{j}"], masks[f"masks_pred_m{j}"]
        ctx = pretrain.encoder(full, masks=mc)
        expect(ctx, f, f"encoder_context_out_m{j}")
        expect(pretrain.predictor(io[f"encoder_context_out_m{j}"], mc, mt), f, f"predictor_out_m{j}")
        expect(pretrain.predictor(gather(pretrain.encoder(full), mc), mc, mt), f, f"predictor_from_full_out_m{j}")
    expect(pretrain.predictor(io["encoder_context_out_m0"], masks["masks_enc_m0"], masks["masks_pred_m0"], mask_index=0),
           f, "predictor_out_m0_mask_index0")


@torch.no_grad()
def test_ac_predictor_sequence_first_step_and_mask(fix, hp, expect, enc_io):
    wm = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"])
    assert wm.predictor is None and wm.ac_predictor is not None
    io, f = load_file(fix / "ac_predictor_io.safetensors"), "ac_predictor_io.safetensors"
    P = hp["encoder"]["tokens_per_frame"]
    expect(wm.ac_predictor(io["ac_features_in"], io["ac_actions_in"], io["ac_states_in"]), f, "ac_out")
    expect(wm.ac_predictor(io["ac_features_in"][:, :P], io["ac_actions_in"][:, :1], io["ac_states_in"][:, :1]),
           f, "ac_out_first_step")
    steps = io["ac_actions_in"].shape[1]
    assert torch.equal(frame_causal_mask(steps, hp["ac_predictor"]["cond_tokens_per_step"] + P), io["attn_mask"])
    # the AC file's frozen encoder is the pretraining target encoder
    expect(wm.target_encoder(enc_io["video"]), "encoder_io.safetensors", "target_encoder_video_out")


@torch.no_grad()
def test_probe_logits(fix, hp, expect):
    wm = load_checkpoint(fix / "probe_checkpoint.pt", probe=hp["probe"])
    assert wm.encoder is None and wm.classifier is not None
    io = load_file(fix / "probe_io.safetensors")
    expect(wm.classifier(io["probe_tokens_in"]), "probe_io.safetensors", "probe_logits")


@torch.no_grad()
def test_every_hf_output(fix, hp, expect):
    f = "hf/hf_io.safetensors"
    io = load_file(fix / f)
    wm = load_checkpoint(fix / "hf" / "vjepa2_model")
    assert wm.config["encoder"].embed_dim == hp["hf"]["hidden_size"]
    assert wm.config["predictor"].pred_embed_dim == hp["hf"]["pred_hidden_size"]
    assert wm.target_encoder is wm.encoder
    video = io["pixel_values_videos"].permute(0, 2, 1, 3, 4)       # HF [B,T,C,H,W] -> ours [B,C,T,H,W]
    cm, tm = io["context_mask"], io["target_mask"]
    out = wm.encoder(video)
    expect(out, f, "last_hidden_state")
    expect(gather(out, cm), f, "masked_hidden_state")
    expect(wm.predictor(gather(out, cm), cm, tm), f, "predictor_last_hidden_state")
    expect(gather(out, tm), f, "predictor_target_hidden_state")
    everything = torch.arange(out.shape[1]).expand(out.shape[0], -1)
    expect(wm.predictor(out, everything, everything), f, "predictor_full_mask_last_hidden_state")
    cls = load_checkpoint(fix / "hf" / "vjepa2_video_classification")
    assert cls.config["probe"].num_classes == len(hp["hf"]["id2label"])
    expect(cls.classifier(cls.encoder(video)), f, "classifier_logits")


def test_pose_math_float64(fix):
    ref = load_file(fix / "pose_math.safetensors")
    close = lambda a, b: torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    close(poses_to_diff(ref["npz_pose_start"].double(), ref["npz_pose_end"].double()), ref["npz_poses_to_diff_out"])
    close(poses_to_diffs(ref["droid_traj_in"]), ref["droid_poses_to_diffs_out"])
    close(compute_new_pose(ref["compute_new_pose_pose_in"], ref["compute_new_pose_action_in"]), ref["compute_new_pose_out"])


def test_hf_matches_transformers_itself(fix):
    """Our loader agrees with transformers' own VJEPA2Model on the same directory (not only with the stored numbers)."""
    transformers = pytest.importorskip("transformers")
    io = load_file(fix / "hf" / "hf_io.safetensors")
    hf = transformers.VJEPA2Model.from_pretrained(fix / "hf" / "vjepa2_model", attn_implementation="sdpa").eval()
    wm = load_checkpoint(fix / "hf" / "vjepa2_model")
    with torch.no_grad():
        ref = hf(io["pixel_values_videos"], skip_predictor=True).last_hidden_state
        ours = wm.encoder(io["pixel_values_videos"].permute(0, 2, 1, 3, 4))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_energy_grid_reproduces_the_official_landscape(fix, hp):
    import numpy as np
    from vjepa2wb.planning import energy_grid
    wm = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"])
    npz = np.load(fix / "franka_example_traj.npz")
    info = __import__("json").loads((fix / "manifest.json").read_text())["energy_landscape"]
    E = energy_grid(wm, npz["observations"][0], npz["states"], grid_size=info["grid_size"], nsamples=info["nsamples"])
    ref = load_file(fix / "energy_landscape.safetensors")["energies"]
    assert E.shape == (info["nsamples"] ** 3,)
    assert (E - ref).abs().max() < 1e-5, (E - ref).abs().max()
    E3 = energy_grid(wm, npz["observations"][0], npz["states"][0], grid_size=info["grid_size"], nsamples=info["nsamples"])
    assert torch.equal(E, E3)                                   # states [1,2,7] or [2,7]


def test_cem_reproduces_the_official_plans(fix, hp):
    import json
    import numpy as np
    from safetensors import safe_open
    from vjepa2wb.planning import cem
    wm = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"])
    io = load_file(fix / "cem_io.safetensors")
    with safe_open(fix / "cem_io.safetensors", "pt") as f:
        info = json.loads(f.metadata()["fixture_info"])
    for name, st in info["settings"].items():
        for mode in ("fast", "reference"):
            diffs = []
            for seed in info["seeds"]:
                torch.manual_seed(seed)
                plan = cem(wm, io["context_reps"], io["context_state"], io["goal_reps"], horizon=st["rollout"], samples=st["samples"],
                           iterations=st["cem_steps"], topk=st["topk"], momentum_mean=st["momentum_mean"], momentum_std=st["momentum_std"],
                           momentum_mean_gripper=st["momentum_mean_gripper"], momentum_std_gripper=st["momentum_std_gripper"],
                           maxnorm=st["maxnorm"], mode=mode)
                assert plan.shape == (st["rollout"], 7)
                diffs.append((plan - io[f"actions_{name}_seed{seed}"]).abs().max().item())
            assert float(np.median(diffs)) <= 1e-3, (name, mode, diffs)


@torch.no_grad()
def test_probe_is_one_name_saved_and_loaded(fix, hp, tmp_path):
    """`probe` everywhere (`classifier` is its contracted alias); files saved with the earlier name still load."""
    import json
    from safetensors.torch import save_file
    from vjepa2wb import save_checkpoint
    wm = load_checkpoint(fix / "probe_checkpoint.pt", probe=hp["probe"])
    assert wm.probe is wm.classifier and list(wm.modules()) == ["probe"] and "probe" in wm.config
    tokens = load_file(fix / "probe_io.safetensors")["probe_tokens_in"]
    saved = save_checkpoint(wm, tmp_path / "probe")
    conf = json.loads((saved / "config.json").read_text())
    assert list(conf["components"]) == ["probe"]
    assert torch.equal(load_checkpoint(saved).probe(tokens), wm.probe(tokens))
    conf["components"] = {"classifier": conf["components"]["probe"]}          # as an earlier version wrote it
    (saved / "config.json").write_text(json.dumps(conf))
    sd = load_file(saved / "model.safetensors")
    save_file({k.replace("probe.", "classifier.", 1): v for k, v in sd.items()}, saved / "model.safetensors", metadata={"format": "vjepa2wb"})
    assert torch.equal(load_checkpoint(saved).classifier(tokens), wm.probe(tokens))


@torch.no_grad()
def test_anticipation_wrapper_probe_metric_and_loss(fix, hp, pretrain, expect):
    f = "anticipation_io.safetensors"
    io = load_file(fix / f)
    info = json.loads(safe_open(fix / f, "pt").metadata()["fixture_info"])
    w = info["wrapper"]
    future = anticipate(pretrain, io["video"], io["anticipation_times"], fps=w["frames_per_second"],
                        num_output_frames=w["num_output_frames"], num_steps=w["num_steps"])
    expect(future, f, "future_tokens")
    ap = hp["anticipation_probe"]
    probe = load_checkpoint(fix / "anticipation_probe_checkpoint.pt", probe={"num_heads": ap["num_heads"]}).classifier
    logits = probe(io["future_tokens"])
    assert sorted(logits) == sorted(ap["classes"])
    for head in ap["classes"]:
        expect(logits[head], f, f"probe_{head}_logits")
    k = info["metric"]["k"]
    for suffix, valid in (("all", None), ("valid", set(io["metric_valid_classes"].tolist()))):
        r = class_mean_recall(io["metric_logits"], io["metric_labels"], k=k, valid_classes=valid)
        expect(torch.tensor(r["recall"]), f, f"recall5_{suffix}")
        expect(torch.tensor(r["accuracy"]), f, f"accuracy5_{suffix}")
    expect(sigmoid_focal_loss(io["metric_logits"], io["metric_labels"]), f, "focal_sum")
    expect(sigmoid_focal_loss(io["metric_logits"], io["metric_labels"], reduction="mean"), f, "focal_mean")
    expect(sigmoid_focal_loss(io["metric_logits"], io["metric_labels"], alpha=0.5, gamma=1.0), f, "focal_a05_g1_sum")
