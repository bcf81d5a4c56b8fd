"""load_checkpoint / save_checkpoint: bad input, strictness, downloads, memory mapping, atomic saves."""
import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vjepa2wb.checkpoints as ckpt
from vjepa2wb import CheckpointError, ConfigError, load_checkpoint, save_checkpoint


@pytest.fixture()
def pretrain_dict(fix):
    return torch.load(fix / "pretrain_checkpoint.pt", map_location="cpu", weights_only=True)


def test_file_that_is_no_checkpoint(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_bytes(b"these are my notes, not weights" * 10)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(p)


def test_truncated_file(tmp_path, fix):
    data = (fix / "pretrain_checkpoint.pt").read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(p)


def test_truncated_safetensors(tmp_path, fix):
    d = tmp_path / "hf"
    shutil.copytree(fix / "hf" / "vjepa2_model", d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(d)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"encoder": _RunsCode(marker)}, p)
    with pytest.raises(CheckpointError, match=r"refused to load .*could run code"):
        load_checkpoint(p)
    assert not marker.exists(), "the pickle's code ran"


def test_missing_and_unexpected_keys(tmp_path, pretrain_dict, hp):
    ck = dict(pretrain_dict)
    ck["encoder"] = dict(ck["encoder"])
    ck["encoder"].pop("module.backbone.norm.bias")
    torch.save(ck, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"encoder does not match.*missing keys: norm.bias"):
        load_checkpoint(tmp_path / "missing.pt", encoder=hp["encoder"], predictor=hp["predictor"])
    ck = dict(pretrain_dict)
    ck["predictor"] = dict(ck["predictor"], **{"module.backbone.predictor_extra.weight": torch.zeros(3)})
    torch.save(ck, tmp_path / "unexpected.pt")
    with pytest.raises(CheckpointError, match=r"predictor does not match.*unexpected keys: predictor_extra.weight"):
        load_checkpoint(tmp_path / "unexpected.pt", encoder=hp["encoder"], predictor=hp["predictor"])


def test_unexpected_top_level_entry(tmp_path, pretrain_dict, hp):
    torch.save(dict(pretrain_dict, teacher={"w": torch.zeros(1)}), tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected entry 'teacher'"):
        load_checkpoint(tmp_path / "extra.pt", encoder=hp["encoder"], predictor=hp["predictor"])


def test_shape_mismatch(tmp_path, pretrain_dict, hp):
    ck = dict(pretrain_dict)
    ck["target_encoder"] = dict(ck["target_encoder"])
    k = "module.backbone.blocks.1.attn.proj.weight"
    ck["target_encoder"][k] = ck["target_encoder"][k][:, :-1]
    torch.save(ck, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"target_encoder.blocks.1.attn.proj.weight has shape .* in the file, but the architecture needs"):
        load_checkpoint(tmp_path / "shape.pt", encoder=hp["encoder"], predictor=hp["predictor"])


def test_config_that_contradicts_the_weights(fix, hp):
    deeper = dict(hp["predictor"], pred_depth=hp["predictor"]["pred_depth"] * 12)
    with pytest.raises(ConfigError, match=r"pred_depth=\d+ contradicts the weights, which say pred_depth="):
        load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=deeper)
    with pytest.raises(ConfigError, match="unknown PredictorConfig field 'pred_dpeth'"):
        load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=dict(hp["predictor"], pred_dpeth=2))
    with pytest.raises(ConfigError, match="holds no such network"):
        load_checkpoint(fix / "probe_checkpoint.pt", probe=hp["probe"], ac_predictor=hp["ac_predictor"])
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(fix / "does_not_exist.pt")


@torch.no_grad()
def test_bad_model_input(fix, hp):
    wm = load_checkpoint(fix / "pretrain_checkpoint.pt", encoder=hp["encoder"], predictor=hp["predictor"])
    e = hp["encoder"]
    size, frames, n = e["img_size"], e["num_frames"], e["tokens_per_frame"] * e["grid_depth"]
    with pytest.raises(ValueError, match="5D tensor"):
        wm.encoder(torch.zeros(1, 3, size, size))
    with pytest.raises(ValueError, match=f"not a multiple of the patch size {e['patch_size']}"):
        wm.encoder(torch.zeros(1, 3, frames, size + 1, size))
    video = torch.zeros(2, 3, frames, size, size)
    with pytest.raises(ValueError, match=f"outside the {n} tokens"):
        wm.encoder(video, masks=torch.tensor([[0, n], [1, 2]]))
    with pytest.raises(ValueError, match="outside"):
        wm.predictor(torch.zeros(2, 2, e["embed_dim"]), torch.tensor([[0, 1]] * 2), torch.tensor([[-1, 3]] * 2))


def test_save_load_roundtrip_all_components(tmp_path, fix, hp):
    for name, kw in [("pretrain_checkpoint.pt", dict(encoder=hp["encoder"], predictor=hp["predictor"])),
                     ("ac_checkpoint.pt", dict(encoder=hp["encoder"], ac_predictor=hp["ac_predictor"])),
                     ("probe_checkpoint.pt", dict(probe=hp["probe"]))]:
        wm = load_checkpoint(fix / name, **kw)
        out = save_checkpoint(wm, tmp_path / name.replace(".pt", ""))
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
        back = load_checkpoint(out)
        for comp, m in wm.modules().items():
            sd, sd2 = m.state_dict(), getattr(back, comp).state_dict()
            assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd), comp
            assert back.config[comp] == wm.config[comp]


def test_save_is_atomic(tmp_path, fix, hp, monkeypatch):
    wm = load_checkpoint(fix / "probe_checkpoint.pt", probe=hp["probe"])
    target = save_checkpoint(wm, tmp_path / "ck")
    before = (target / "model.safetensors").read_bytes()

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-save")
    monkeypatch.setattr(ckpt, "save_file", crash)
    with torch.no_grad():
        wm.classifier.linear.bias += 1
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(wm, target)
    assert (target / "model.safetensors").read_bytes() == before
    load_checkpoint(target)   # still a complete checkpoint


def _serve_file_url(src: Path, tmp_path: Path, name: str) -> str:
    d = tmp_path / "release_server"
    d.mkdir(exist_ok=True)
    shutil.copy(src, d / name)
    return d.as_uri()


@torch.no_grad()
def test_released_name_downloads_through_cache(tmp_path, fix, hp, monkeypatch, expect):
    base = _serve_file_url(fix / "pretrain_checkpoint.pt", tmp_path, ckpt.RELEASES["vitl"][0])
    monkeypatch.setenv("VJEPA2WB_RELEASE_BASE_URL", base)
    monkeypatch.setenv("VJEPA2WB_CACHE", str(tmp_path / "cache"))
    wm = load_checkpoint("vitl", encoder=hp["encoder"], predictor=hp["predictor"])
    cached = tmp_path / "cache" / ckpt.RELEASES["vitl"][0]
    assert cached.exists() and cached.stat().st_size == (fix / "pretrain_checkpoint.pt").stat().st_size
    assert not list((tmp_path / "cache").glob("*.part"))
    video = load_file(fix / "encoder_io.safetensors")["video"]
    expect(wm.target_encoder(video), "encoder_io.safetensors", "target_encoder_video_out")
    # a plain URL works too, and a second load reads the cache
    wm2 = load_checkpoint(f"{base}/{ckpt.RELEASES['vitl'][0]}", encoder=hp["encoder"], predictor=hp["predictor"])
    assert wm2.encoder is not None


def test_incomplete_download_is_refused(tmp_path, monkeypatch):
    class Short(io.BytesIO):
        headers = {"Content-Length": "100"}
        def __enter__(self): return self
        def __exit__(self, *a): self.close()
    monkeypatch.setattr(ckpt.urllib.request, "urlopen", lambda url: Short(b"x" * 60))
    dest = tmp_path / "vitl.pt"
    with pytest.raises(CheckpointError, match="incomplete: 60 of 100 bytes"):
        ckpt.download("https://example.invalid/vitl.pt", dest, progress=False)
    assert not dest.exists() and not list(tmp_path.glob("*.part"))


def test_large_file_loads_memory_mapped(tmp_path):
    """A ~400 MB official-layout file loads with far less new resident memory than its size.

    The finite check reads every weight once, so the file's pages become resident; they are the
    file's own (page cache the kernel may drop), not a copy, and are not counted."""
    script = textwrap.dedent(f"""
        import resource, torch
        from vjepa2wb.encoder import VisionTransformer
        from vjepa2wb.core import encoder_config
        cfg = encoder_config("large", depth=8)
        m = VisionTransformer(cfg)
        torch.save({{"encoder": {{"module.backbone." + k: v for k, v in m.state_dict().items()}}}}, "{tmp_path}/big.pt")
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    size = (tmp_path / "big.pt").stat().st_size
    assert size > 300e6
    probe = textwrap.dedent(f"""
        import resource, torch
        from vjepa2wb import load_checkpoint
        def file_pages():
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("RssFile:"))
        before, file_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file_pages()
        wm = load_checkpoint("{tmp_path}/big.pt")
        after, file_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file_pages()
        assert wm.encoder.cfg.depth == 8
        print((after - before) - (file_after - file_before))
    """)
    grew = int(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()[-1])
    assert grew < 0.25 * size, f"loading a {size / 1e6:.0f} MB file grew the peak RSS by {grew / 1e6:.0f} MB"


def test_release_extras_are_ignored_knowingly(tmp_path, pretrain_dict, hp, fix, expect):
    """Release files may lack opt/scaler and carry unused sin-cos position tables: both load, and say so."""
    ck = {k: dict(v) for k, v in pretrain_dict.items() if k in ("encoder", "target_encoder", "predictor")}
    D = hp["encoder"]["embed_dim"]
    ck["target_encoder"]["module.backbone.pos_embed"] = torch.zeros(1, 32, D)
    ck["predictor"]["module.backbone.predictor_pos_embed"] = torch.zeros(1, 32, hp["predictor"]["pred_embed_dim"])
    torch.save(ck, tmp_path / "release.pt")
    wm = load_checkpoint(tmp_path / "release.pt", encoder=hp["encoder"], predictor=hp["predictor"])
    assert sorted(wm.ignored) == ["predictor.predictor_pos_embed", "target_encoder.pos_embed"]
    video = load_file(fix / "encoder_io.safetensors")["video"]
    with torch.no_grad():
        expect(wm.target_encoder(video), "encoder_io.safetensors", "target_encoder_video_out")


@torch.no_grad()
@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_official_layout_roundtrip_infers_architecture(tmp_path, activation):
    """A model saved in the official layout loads back with its architecture read off the weights."""
    from vjepa2wb.core import ac_predictor_config, encoder_config
    from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
    from vjepa2wb.encoder import VisionTransformer
    torch.manual_seed(0)
    enc = VisionTransformer(encoder_config("tiny", depth=3, activation=activation, img_size=64, num_frames=4)).eval()
    ac = VisionTransformerPredictorAC(ac_predictor_config("tiny", pred_depth=2, img_size=64, use_extrinsics=True,
                                                          activation=activation, max_num_frames=8)).eval()
    wrap = lambda m: {f"module.{k}": v for k, v in m.state_dict().items()}
    torch.save({"encoder": wrap(enc), "predictor": wrap(ac), "epoch": 3}, tmp_path / "ac.pt")
    wm = load_checkpoint(tmp_path / "ac.pt", encoder=dict(img_size=64),
                         ac_predictor=dict(img_size=64, use_extrinsics=True, max_num_frames=8, pred_num_heads=6))
    cfg = wm.config["encoder"]
    assert (cfg.depth, cfg.embed_dim, cfg.activation, cfg.mlp_hidden) == (3, 192, activation, enc.cfg.mlp_hidden)
    assert wm.config["ac_predictor"].pred_depth == 2 and wm.config["ac_predictor"].cond_tokens == 3
    video = torch.randn(1, 3, 4, 64, 64)
    assert torch.equal(wm.encoder(video), enc(video))
    feats, acts = torch.randn(1, 2 * 16, 192), torch.randn(1, 2, 7)
    ext = torch.randn(1, 2, 6)
    assert torch.equal(wm.ac_predictor(feats, acts, acts, ext), ac(feats, acts, acts, ext))
    with pytest.raises(ValueError, match="extrinsics must be"):
        wm.ac_predictor(feats, acts, acts)


@torch.no_grad()
def test_anticipation_probe_roundtrip_and_released_probe_names(tmp_path, fix, manifest, monkeypatch):
    ap = manifest["hyperparameters"]["anticipation_probe"]
    tokens = load_file(fix / "anticipation_io.safetensors")["future_tokens"]
    wm = load_checkpoint(fix / "anticipation_probe_checkpoint.pt", probe={"num_heads": ap["num_heads"]})
    ref = wm.classifier(tokens)
    back = load_checkpoint(save_checkpoint(wm, tmp_path / "ours"))
    assert back.config["probe"].outputs == ap["classes"] and back.config["probe"].num_queries == len(ap["classes"])
    assert all(torch.equal(v, ref[k]) for k, v in back.classifier(tokens).items())
    # each released probe name resolves to its file under evals/, as the official README links them
    server = tmp_path / "server"
    probes = {n: f for n, (f, kind) in ckpt.RELEASES.items() if kind == "probe"}
    assert sorted(probes) == sorted(f"{task}-{size}" for task in ("ssv2", "diving48", "ek100") for size in ("vitl", "vitg-384"))
    for name, file in probes.items():
        (server / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fix / ("anticipation_probe_checkpoint.pt" if name.startswith("ek100") else "probe_checkpoint.pt"), server / file)
    monkeypatch.setenv("VJEPA2WB_RELEASE_BASE_URL", server.as_uri())
    monkeypatch.setenv("VJEPA2WB_CACHE", str(tmp_path / "cache"))
    for name, file in probes.items():
        cfg = load_checkpoint(name).config["probe"]
        assert cfg.num_heads == ckpt.RELEASED_PROBE_HEADS and (tmp_path / "cache" / file).exists(), name
        assert (cfg.outputs is not None) == name.startswith("ek100"), name
    ek = load_checkpoint("ek100-vitl", probe={"num_heads": ap["num_heads"]}).classifier(tokens)
    assert all(torch.equal(v, ref[k]) for k, v in ek.items())


@torch.no_grad()
def test_hf_video_classifier_with_a_vitg_mlp_ratio(tmp_path):
    """transformers builds the pooler's MLPs at ratio 4 whatever the config's mlp_ratio (ViT-g's is 48/11)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VJEPA2Config(crop_size=32, frames_per_clip=2, hidden_size=44, num_attention_heads=2,
                                    num_hidden_layers=1, mlp_ratio=48 / 11, pred_hidden_size=32, pred_num_attention_heads=2,
                                    pred_num_hidden_layers=1, num_pooler_layers=1, num_labels=3)
    torch.manual_seed(0)
    model = transformers.VJEPA2ForVideoClassification(cfg).eval()
    model.save_pretrained(tmp_path / "hf")
    wm = load_checkpoint(tmp_path / "hf")
    assert wm.config["encoder"].mlp_ratio == pytest.approx(48 / 11) and wm.config["probe"].mlp_ratio == 4.0
    x = torch.randn(2, 2, 3, 32, 32)
    ref = model(pixel_values_videos=x).logits
    ours = wm.classifier(wm.encoder(x.transpose(1, 2)))
    assert ref.abs().max() > 1e-3 and torch.allclose(ours, ref, atol=1e-4, rtol=1e-4), (ours - ref).abs().max()
