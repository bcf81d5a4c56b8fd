"""Shared fixtures: the conformance fixture folder and its manifest."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vjepa2wb.core import fixtures_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fix() -> Path:
    d = fixtures_dir()
    assert d is not None and (d / "manifest.json").exists(), \
        "conformance fixtures not found: expected ../shared/fixtures/conformance beside the checkout (or set VJEPA2WB_FIXTURES)"
    return d


@pytest.fixture(scope="session")
def manifest(fix) -> dict:
    return json.loads((fix / "manifest.json").read_text())


@pytest.fixture(scope="session")
def hp(manifest) -> dict:
    return manifest["hyperparameters"]


@pytest.fixture(scope="session")
def expect(fix, manifest):
    """expect(actual, file, name): compare with a stored output within the manifest's tolerance."""
    cache = {}

    def check(actual, file, name):
        if file not in cache:
            cache[file] = load_file(fix / file)
        ref = cache[file][name]
        # files the manifest lists no tolerance for get the README's uniform float32 one
        tol = manifest["tolerances"].get(file, {}).get(name, {"suggested_atol": 2e-4, "suggested_rtol": 1e-4})
        diff = (actual - ref).abs().max().item()
        assert actual.shape == ref.shape, f"{file}:{name}: shape {tuple(actual.shape)} != {tuple(ref.shape)}"
        assert torch.allclose(actual, ref, atol=tol["suggested_atol"], rtol=tol["suggested_rtol"]), \
            f"{file}:{name}: max |diff| {diff:.3g} exceeds atol {tol['suggested_atol']} rtol {tol['suggested_rtol']}"
        return diff

    return check
