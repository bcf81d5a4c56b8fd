"""The arm contract: observations, bad commands, clipping, determinism, and the tasks' success checks."""
import numpy as np
import pytest
import torch

from vjepa2wb.arm import Arm, Observation, SimArm
from vjepa2wb.pose import poses_to_diff
from vjepa2wb.tasks import TASKS, make_task, scripted_episode, success


@pytest.fixture(scope="module")
def arm():
    with SimArm(width=96, height=96) as a:
        yield a


def test_interface_and_observation(arm):
    assert isinstance(arm, Arm) and arm.control_period == 0.25
    obs = arm.reset(seed=1)
    assert isinstance(obs, Observation) and obs.frame.shape == (96, 96, 3) and obs.frame.dtype == np.uint8
    assert obs.state.shape == (7,) and obs.time == 0.0
    nxt = arm.step(np.zeros(7))
    assert isinstance(nxt, Observation) and nxt.time == pytest.approx(0.25) and {"clipped_step", "clipped_workspace"} <= set(nxt.info)
    assert set(arm.camera) >= {"name", "width", "height", "fovy"} and len(arm.workspace.low) == 3


@pytest.mark.parametrize("delta", [[0.05, 0, 0], [0, -0.04, 0], [0, 0, -0.05], [0.03, 0.03, 0.02]])
def test_commanded_delta_reached_within_1cm(arm, delta):
    s0 = arm.reset(seed=2).state
    s1 = arm.step([*delta, 0, 0, 0, 0]).state
    moved = poses_to_diff(torch.from_numpy(s0), torch.from_numpy(s1)).numpy()
    assert np.linalg.norm(moved[:3] - delta) < 0.01, moved


@pytest.mark.parametrize("bad", [[0, 0, float("nan"), 0, 0, 0, 0], [float("inf")] + [0] * 6, [0] * 6, [[0] * 7]])
def test_bad_commands_leave_the_arm_unmoved(arm, bad):
    arm.reset(seed=0)
    arm.step([0.02, 0, 0, 0, 0, 0, 0])
    qpos, state, t = arm.data.qpos.copy(), arm.state(), arm._t
    with pytest.raises(ValueError, match="the arm did not move"):
        arm.step(bad)
    assert np.array_equal(arm.data.qpos, qpos) and np.array_equal(arm.state(), state) and arm._t == t


def test_workspace_and_step_limits_clip(arm):
    before = arm.reset(seed=0).state
    info = arm.step([0.0, 0.9, 0, 0, 0, 0, 0]).info
    assert info["clipped_step"]
    assert np.linalg.norm(info["target_state"][:3] - before[:3]) == pytest.approx(arm.max_translation)
    for _ in range(12):
        info = arm.step([0, 0.075, 0, 0, 0, 0, 0]).info
    assert info["clipped_workspace"] and arm.state()[1] <= arm.workspace.high[1] + 0.01
    assert arm.step([0, 0, 0, 0, 0, 0, -3]).info["target_state"][6] == 0.0


def test_same_seed_same_frames(arm):
    runs = [[arm.reset(seed=5).frame] + [arm.step([0.01, 0.01, -0.01, 0, 0, 0.1, 0.3]).frame for _ in range(3)] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("name", TASKS)
def test_scripted_solutions_succeed(arm, name):
    task = make_task(arm, name, seed=11)
    assert task.goal_frame.shape == (96, 96, 3) and task.goal_state.shape == (7,)
    assert not success(task, arm)
    for _ in scripted_episode(task, arm):
        pass
    assert success(task, arm)
