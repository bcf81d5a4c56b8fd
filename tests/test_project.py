"""The workbench's shape: packages in sync, job notebooks parametrised, the public API's contracts."""
import configparser
import inspect
import json
import re
import shlex

import yaml

from conftest import ROOT

JOB_PREFIXES = ("bench_", "pretrain", "train_", "probe", "collect_", "robot_", "eval_")


def notebooks():
    return sorted((ROOT / "nbs").glob("*.ipynb"))


def test_environment_yml_matches_settings_ini():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    pip_reqs = shlex.split(cfg["DEFAULT"]["requirements"]) + shlex.split(cfg["DEFAULT"]["dev_requirements"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pip = [p for p in conda_pip if not p.startswith("-e")]
    assert sorted(conda_pip) == sorted(pip_reqs), (
        f"environment.yml and settings.ini drifted: only in environment.yml {sorted(set(conda_pip) - set(pip_reqs))}, "
        f"only in settings.ini {sorted(set(pip_reqs) - set(conda_pip))}")


def test_job_notebooks_have_a_parameters_cell():
    jobs = [nb for nb in notebooks() if nb.name.startswith(JOB_PREFIXES)]
    assert jobs, "no job notebooks found"
    for nb in jobs:
        cells = json.loads(nb.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), \
            f"{nb.name} has no cell tagged 'parameters': papermill would silently ignore -p"


def test_library_notebooks_export_a_module():
    for nb in notebooks():
        if nb.name[0].isdigit():
            src = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
            assert "#| default_exp" in src, f"{nb.name} exports no module"


def test_readme_and_ci_entry_points():
    readme = (ROOT / "README.md").read_text()
    first = readme[: readme.index("## What V-JEPA 2 is")]
    assert "make run" in first and "make test" in first, "README must start with the two set-up commands"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_public_api_contracts():
    from vjepa2wb import compute_new_pose, load_checkpoint, poses_to_diff, poses_to_diffs, save_checkpoint
    from vjepa2wb.ac_predictor import VisionTransformerPredictorAC
    from vjepa2wb.encoder import VisionTransformer
    from vjepa2wb.predictor import VisionTransformerPredictor
    from vjepa2wb.probe import AttentiveClassifier

    sig = lambda f: list(inspect.signature(f).parameters)
    params = inspect.signature(load_checkpoint).parameters
    positional = [k for k, v in params.items() if v.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional == ["path", "encoder", "predictor", "ac_predictor", "probe", "device"]     # additions are keyword-only
    assert inspect.signature(load_checkpoint).parameters["device"].default == "cpu"
    assert sig(save_checkpoint) == ["wm", "directory"]
    assert sig(VisionTransformer.forward)[1:] == ["video", "masks"]
    assert sig(VisionTransformerPredictor.forward)[1:] == ["ctx", "masks_ctx", "masks_tgt", "mask_index"]
    assert sig(VisionTransformerPredictorAC.forward)[1:] == ["features", "actions", "states", "extrinsics"]
    assert sig(AttentiveClassifier.forward)[1:] == ["tokens"]
    assert sig(poses_to_diff) == ["start", "end"] and sig(poses_to_diffs) == ["poses"]
    assert sig(compute_new_pose) == ["pose", "action"]
    from vjepa2wb.planning import cem, energy_grid
    assert sig(energy_grid) == ["wm", "frames", "states", "grid_size", "nsamples", "crop_size"]
    defaults = {k: v.default for k, v in inspect.signature(cem).parameters.items()}
    assert list(defaults)[:4] == ["wm", "context_reps", "context_state", "goal_reps"]
    contract = dict(horizon=1, samples=100, iterations=100, topk=10, momentum_mean=0.25, momentum_std=0.95,
                    momentum_mean_gripper=0.15, momentum_std_gripper=0.15, maxnorm=0.05)
    assert {k: defaults[k] for k in list(defaults)[4:13]} == contract     # extra options come after, keyword-only


def test_job_parameters_are_their_config_fields():
    """A training job's parameters are its config's fields, with the same names and defaults, and `config_from` builds it."""
    import ast
    import dataclasses
    import papermill as pm
    from vjepa2wb.pretrain import PretrainConfig
    from vjepa2wb.train_ac import ACTrainConfig

    plain = lambda v: list(v) if isinstance(v, tuple) else v
    for notebook, cls in (("pretrain.ipynb", PretrainConfig), ("train_ac.ipynb", ACTrainConfig)):
        params = pm.inspect_notebook(str(ROOT / "nbs" / notebook))
        for f in dataclasses.fields(cls):
            assert f.name in params, f"{notebook} has no parameter {f.name}, a field of {cls.__name__}"
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            given = ast.literal_eval(params[f.name]["default"])
            assert plain(given) == plain(default), f"{notebook}: {f.name} defaults to {given!r}, {cls.__name__} to {default!r}"
        built = cls(**{name: ast.literal_eval(p["default"]) for name, p in params.items() if name in {f.name for f in dataclasses.fields(cls)}})
        assert built == cls(), f"{notebook}'s defaults do not build {cls.__name__}()"


def test_readme_is_the_index_rendered():
    """README.md is nbs/index.ipynb as tools/readme.py renders it (`make readme`), and each notebook it links to exists."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("readme", ROOT / "tools" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    text = (ROOT / "README.md").read_text()
    assert text == readme.render(), "README.md is out of date with nbs/index.ipynb: edit the notebook and run make readme"
    links = re.findall(r"\]\((nbs/[^)]+\.ipynb)\)", text)
    assert len(links) > 30 and all((ROOT / link).exists() for link in links), [l for l in links if not (ROOT / l).exists()]
