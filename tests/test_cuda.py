"""The same code on CUDA: fp32 conformance, and bf16 autocast close to fp32. Skipped without a GPU (CI has none)."""
import pytest
import torch
from safetensors.torch import load_file

from vjepa2wb import load_checkpoint
from vjepa2wb.encoder import image_to_clip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # TF32 would round fp32 to 10 bits
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@torch.no_grad()
def test_fp32_conformance_on_cuda(fix, hp, expect):
    wm = load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=hp["predictor"], device="cuda")
    io, masks = load_file(fix / "encoder_io.safetensors"), load_file(fix / "masks.safetensors")
    video = io["video"].cuda()
    expect(wm.target_encoder(video).cpu(), "encoder_io.safetensors", "target_encoder_video_out")
    expect(wm.target_encoder(image_to_clip(io["image"].cuda(), 2)).cpu(), "encoder_io.safetensors", "target_encoder_image_tubelet_out")
    mc, mt = masks["masks_enc_m0"].cuda(), masks["masks_pred_m0"].cuda()
    expect(wm.encoder(video, masks=mc).cpu(), "predictor_io.safetensors", "encoder_context_out_m0")
    ctx = load_file(fix / "predictor_io.safetensors")["encoder_context_out_m0"].cuda()
    expect(wm.predictor(ctx, mc, mt).cpu(), "predictor_io.safetensors", "predictor_out_m0")
    ac = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"], device="cuda")
    a = load_file(fix / "ac_predictor_io.safetensors")
    out = ac.ac_predictor(a["ac_features_in"].cuda(), a["ac_actions_in"].cuda(), a["ac_states_in"].cuda())
    expect(out.cpu(), "ac_predictor_io.safetensors", "ac_out")


def test_bf16_autocast_matches_fp32_and_trains(fix, hp):
    ac = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"], device="cuda")
    io = load_file(fix / "encoder_io.safetensors")
    a = load_file(fix / "ac_predictor_io.safetensors")
    feats, acts, sts = a["ac_features_in"].cuda(), a["ac_actions_in"].cuda(), a["ac_states_in"].cuda()
    with torch.no_grad():
        ref_enc, ref_ac = ac.encoder(io["video"].cuda()), ac.ac_predictor(feats, acts, sts)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            enc, out = ac.encoder(io["video"].cuda()), ac.ac_predictor(feats, acts, sts)
    assert out.dtype == torch.bfloat16            # the encoder ends in LayerNorm, which autocast keeps in fp32
    assert torch.isfinite(enc).all() and torch.isfinite(out).all()
    assert rel_err(enc, ref_enc) < 3e-2 and rel_err(out, ref_ac) < 3e-2, (rel_err(enc, ref_enc), rel_err(out, ref_ac))
    # a training step under autocast with activation checkpointing gives finite gradients
    pred = ac.ac_predictor.train()
    pred.grad_checkpointing = True
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = (pred(feats, acts, sts) - feats).abs().mean()
    loss.backward()
    grads = [p.grad for p in pred.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@torch.no_grad()
def test_compiled_rope_matches_eager():
    from vjepa2wb.kernels import _COMPILED, apply_rope, rope_math as _rope_math
    from vjepa2wb.layers import grid_positions, rope_table
    cos, sin = rope_table(grid_positions(2, 16, 16).cuda(), 64)
    q = torch.randn(4, 512, 3, 16, 64, device="cuda").permute(2, 0, 3, 1, 4)[0]      # the strided view attention passes
    ref = _rope_math(q, cos[None], sin[None])
    assert rel_err(apply_rope(q, cos, sin), ref) < 1e-6
    assert _COMPILED.get((_rope_math, None)), "the compiled RoPE kernel was not used"
    fast = apply_rope(q.bfloat16(), cos, sin)
    assert fast.dtype == torch.bfloat16 and rel_err(fast, ref) < 8e-3


@torch.no_grad()
def test_compiled_block_step_matches_eager():
    from vjepa2wb.kernels import _COMPILED, block_step, cached_block_step
    from vjepa2wb.layers import grid_positions, make_blocks, rope_table
    torch.manual_seed(0)
    blk = make_blocks(1, 256, 4, 1024, "gelu", True, 1e-6)[0].cuda().eval()
    cos, sin = rope_table(grid_positions(2, 8, 8).cuda(), 64)
    x = torch.randn(32, 128, 256, device="cuda")
    first = (cos[:64], sin[:64]), (cos[64:], sin[64:])
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        model = blk.to(dtype)
        xs = x.to(next(model.parameters()).dtype)
        ref, kv = block_step(model, xs[:, :64], first[0])
        ref2, kv2 = block_step(model, xs[:, 64:], first[1], kv)
        out, ckv = cached_block_step(model, xs[:, :64], first[0])
        out2, ckv2 = cached_block_step(model, xs[:, 64:], first[1], ckv)
        for a, b in ((out, ref), (out2, ref2), (ckv2[0], kv2[0]), (ckv2[1], kv2[1])):
            assert a.dtype == b.dtype and rel_err(a, b) < tol, rel_err(a, b)
    assert _COMPILED.get((block_step, None)), "the compiled block step was not used"


@torch.no_grad()
def test_fused_gelu_mlp_within_half_precision_rounding():
    from vjepa2wb.kernels import mlp_inference
    from vjepa2wb.layers import MLP
    torch.manual_seed(0)
    mlp = MLP(256, 1024).cuda()
    x = torch.randn(4, 300, 256, device="cuda")
    exact = mlp(x)
    for dtype in (torch.bfloat16, torch.float16):
        half = MLP(256, 1024).cuda().to(dtype)
        half.load_state_dict(mlp.state_dict())
        fused, plain = mlp_inference(half, x.to(dtype)), half(x.to(dtype))
        assert fused.dtype == dtype and fused.shape == exact.shape
        # the tanh GELU in the epilogue is no further from fp32 than the half-precision MLP itself
        assert rel_err(fused, exact) < 1.5 * rel_err(plain, exact) + 1e-3, (rel_err(fused, exact), rel_err(plain, exact))
    assert torch.equal(mlp_inference(mlp, x), exact)                 # float32 keeps the exact GELU
