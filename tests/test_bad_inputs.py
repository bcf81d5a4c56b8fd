"""Bad input, in one place: each case, the input, and the refusal it gets.

What is refused at load, what is skipped and counted, what never reaches the arm, and which job
parameters stop a job before any work. The README's "What the workbench promises" is this file in prose.
"""
import copy
import json

import numpy as np
import papermill as pm
import pytest
import torch

from conftest import ROOT
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
