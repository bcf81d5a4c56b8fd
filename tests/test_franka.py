"""FrankaArm (vjepa2wb.franka) against franka-sim on loopback, started with the launcher `make franka-sim` runs.

The sim runs in its own venv (.venv-franka-sim: it pins numpy 1.26); the fixture builds it with
`make franka-sim-venv` on first use and skips only if that cannot be done. Every loop here is bounded
in count and time; the sim binds 127.0.0.1 only.
"""
import gc
import importlib.util
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa2wb.arm import Workspace
from vjepa2wb.cameras import Frame
from vjepa2wb.franka import (FRANKA_SIM_PORT, ArmError, FrankaArm, FrankaSim, _listening, pose_to_state,
                             step_target, repo_root)
from vjepa2wb.pose import compute_new_pose, euler_to_matrix, poses_to_diff

ROOT = repo_root()
MOVE_TOL_M, MOVE_TOL_RAD = 0.003, 0.02        # the stated tolerance: 3 mm and about 1.1 degrees ...
SETTLE_S = 1.5                                # ... 1.5 s after a step's command


# -- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_env():
    "The sim's venv, built on first use; a skip (with the reason) only if it cannot be built."
    global franka
    if importlib.util.find_spec("franka") is None:
        pytest.skip("franka-rs is not installed in this venv: make install (or pip install franka-rs==0.4.0)")
    sim = FrankaSim(log=None)
    if not sim.available:
        try:
            sim.build(timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            out = getattr(e, "output", b"") or b""
            pytest.skip(f"the franka-sim venv could not be built (make franka-sim-venv): {e} {out[-500:]!r}")
    if not sim.available:
        pytest.skip("make franka-sim-venv ran, but .venv-franka-sim/bin/python is still missing")
    import franka
    return sim


@pytest.fixture(scope="module")
def sim(sim_env, tmp_path_factory):
    "franka-sim on 127.0.0.1:1337 for this module; tests that kill it start it again."
    if _listening(FRANKA_SIM_PORT):
        pytest.fail(f"something already listens on 127.0.0.1:{FRANKA_SIM_PORT} (another franka-sim?): stop it first")
    s = FrankaSim(log=tmp_path_factory.mktemp("franka-sim") / "sim.log")
    s.start(timeout=60)
    yield s
    s.stop()


@pytest.fixture
def make_arm(sim):
    "FrankaArm(...) on the sim, closed after the test; the sim is (re)started if a test left it dead."
    arms = []

    def make(**kw):
        if not sim.alive:
            sim.start(timeout=60)
        arm = FrankaArm("127.0.0.1", **kw)
        arms.append(arm)
        return arm

    yield make
    for arm in arms:
        arm.close()
    del arms[:]
    gc.collect()        # a reference cycle through a traceback can keep a closed arm's connection, and the sim serves one client
    if not sim.alive:
        sim.start(timeout=60)


def _settle(arm, seconds=SETTLE_S):
    time.sleep(seconds)
    return arm.state()


def _errors(expect, got):
    "Translation (m) and rotation (rad) between two 7D states."
    diff = poses_to_diff(torch.from_numpy(expect), torch.from_numpy(got)).numpy()
    return float(np.linalg.norm(diff[:3])), float(np.linalg.norm(diff[3:6]))


def _inet_sockets(pid: int) -> list:
    "(protocol, local address hex, port, state) of every IP socket the process holds, from /proc."
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if table.exists():
            for line in table.read_text().splitlines()[1:]:
                f = line.split()
                if f[9] in inodes:
                    addr, port = f[1].split(":")
                    found.append((proto, addr, int(port, 16), f[3]))
    return found


LOOPBACK = {"tcp": "0100007F", "udp": "0100007F", "tcp6": "00000000000000000000000001000000", "udp6": "00000000000000000000000001000000"}


# -- pure parts (no sim) ------------------------------------------------------------------------------------

def test_step_target_is_compute_new_pose_when_unclipped():
    rng = np.random.default_rng(1)
    ws = Workspace((-5, -5, -5), (5, 5, 5))
    for _ in range(100):
        state = np.r_[rng.uniform(-0.5, 0.5, 3), rng.uniform(-3, 3, 3), 0.0]
        a = np.r_[rng.uniform(-0.01, 0.01, 3), rng.uniform(-0.1, 0.1, 3), 0.0]
        base = np.eye(4)
        base[:3, :3], base[:3, 3] = euler_to_matrix(torch.from_numpy(state[3:6])).numpy(), state[:3]
        T, _, info = step_target(base, a, ws, max_step=0.02, max_rotation=0.1)
        expect = compute_new_pose(torch.from_numpy(state), torch.from_numpy(a)).numpy()
        assert not info["clipped_step"] and not info["clipped_workspace"]
        assert _errors(expect, pose_to_state(T, 0.0)) < (1e-9, 1e-9)


def test_constructor_refuses_bad_arguments_before_connecting():
    for kw, word in [(dict(max_step=-1), "max_step"), (dict(max_rotation=float("inf")), "max_rotation"),
                     (dict(anchor="tool"), "anchor"), (dict(home_q=[0.0] * 6), "home_q"),
                     (dict(workspace=((0, 0, 0), (1, 1, 1))), "workspace"), (dict(grasp_threshold=1.5), "grasp_threshold")]:
        with pytest.raises((ValueError, TypeError), match=word):
            FrankaArm("127.0.0.1", **kw)


# -- the launcher ---------------------------------------------------------------------------------------------

def test_make_franka_sim_runs_in_the_foreground_on_loopback_until_sigterm(sim_env):
    "`make franka-sim` serves 127.0.0.1:1337 (hand 1338) and stops on SIGTERM (to make), as outside tools use it."
    if _listening(FRANKA_SIM_PORT):
        pytest.skip("a franka-sim already runs on 127.0.0.1:1337")
    proc = subprocess.Popen(["make", "-s", "-C", str(ROOT), "franka-sim"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (_listening(1337) and _listening(1338)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None and _listening(1337) and _listening(1338), "make franka-sim did not serve 1337 and 1338"
        with FrankaArm("127.0.0.1") as arm:                   # the constructor outside tools use
            assert arm.state().shape == (7,)
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        print(f"make franka-sim stopped {time.monotonic() - t:.2f} s after SIGTERM")
        assert b"franka-sim stopped" in out
        time.sleep(0.3)
        assert not _listening(1337) and not _listening(1338)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)


# -- against the sim --------------------------------------------------------------------------------------------

def test_sim_binds_loopback_only(sim, make_arm):
    arm = make_arm()
    arm.reset(0)
    arm.step(np.zeros(7))                                     # the sim's UDP state socket exists now
    socks = _inet_sockets(sim.proc.pid)
    assert {(p, port) for p, _, port, st in socks if st == "0A"} >= {("tcp", 1337), ("tcp", 1338)}
    wrong = [s for s in socks if s[1] != LOOPBACK[s[0]]]
    assert not wrong, f"franka-sim sockets not on 127.0.0.1: {wrong}"
    assert any(p == "udp" for p, *_ in socks)


def test_connect_reads_state_and_sets_collision_thresholds(sim, make_arm):
    arm = make_arm(collision_torque=45.0, collision_force=50.0)
    obs = arm.reset(seed=3)
    assert obs.state.shape == (7,) and np.isfinite(obs.state).all()
    np.testing.assert_allclose(obs.state[:3], [0.307, 0.0, 0.590], atol=0.005)   # HOME_Q; F_T_EE = I in the sim
    assert abs(abs(obs.state[3]) - np.pi) < 0.02 and abs(obs.state[5] + np.pi / 4) < 0.02   # pointing down, yawed -45 deg
    assert obs.state[6] == pytest.approx(0.0, abs=0.01)                         # the hand opened
    assert obs.frame.shape == (256, 256, 3) and obs.frame.dtype == np.uint8 and not obs.frame.any()
    assert "no camera" in obs.info["camera"] and obs.info["seed"] == 3 and obs.time < 0.5
    assert obs.info["robot_mode"] == "move"
    assert arm.events[0]["event"] == "connected" and arm.events[0]["collision_thresholds"] == [45.0, 50.0]
    assert "SetCollisionBehavior" in sim.log.read_text()                        # the sim received them


class _Camera:
    "A camera as vjepa2wb.cameras gives them (a Frame with .image and .time), or a bare array, or None."
    name = "fake"

    def __init__(self, kind):
        self.kind, self.count = kind, 0

    def read(self):
        self.count += 1
        image = np.full((48, 64, 3), self.count % 255, np.uint8)
        if self.kind == "frame":
            return Frame(image, time.monotonic(), self.count - 1)
        return {"array": image, "none": None, "bad": image.astype(np.float32)}[self.kind]


def test_camera_frames_by_duck_typing(make_arm):
    "Frames are cropped to a centred square of frame_size, never squashed; the crop box is in info."
    arm = make_arm(camera=_Camera("frame"), frame_size=32)
    obs = arm.reset(0)
    assert obs.frame.shape == (32, 32, 3) and obs.frame.any() and obs.info["camera"] == "fake" and obs.info["frame_time"]
    assert obs.info["crop_box"] == (0, 8, 48) and obs.info["camera_size"] == [48, 64]
    assert (arm.camera["width"], arm.camera["height"]) == (64, 48)
    arm.camera_source = _Camera("array")
    assert arm.step(np.zeros(7)).frame.shape == (32, 32, 3)
    arm.camera_source = _Camera("none")
    obs = arm.step(np.zeros(7))
    assert obs.frame.shape == (32, 32, 3) and not obs.frame.any() and "no frame" in obs.info["camera"]
    arm.camera_source = _Camera("bad")
    with pytest.raises(ValueError, match="uint8"):
        arm.step(np.zeros(7))


class _SingularOnce:
    "The robot, except that its next Cartesian loop is refused as libfranka refuses a singular start."
    def __init__(self, robot):
        self._robot, self.refused = robot, 0

    def __getattr__(self, name):
        return getattr(self._robot, name)

    def cartesian_targets(self, **kw):
        if not self.refused:
            self.refused += 1
            e = franka.ControlException("libfranka: Move command rejected: cannot start at singular pose!")
            e.kind = "control"
            raise e
        return self._robot.cartesian_targets(**kw)


def test_singular_start_is_homed_away_from(make_arm):
    arm = make_arm()
    arm.reset(0)
    arm.step([0.02, 0, 0, 0, 0, 0, 0])
    arm._interrupt()                                                            # the loop ends, as after Ctrl-C
    arm.robot = _SingularOnce(arm.robot)
    obs = arm.step(np.zeros(7))                                                 # re-opening is refused once: home, then open
    assert obs.info["loop_reopened"] and arm.robot.refused == 1
    assert [e["event"] for e in arm.events][-1] == "singular_start_refused"
    np.testing.assert_allclose(obs.state[:3], [0.307, 0.0, 0.590], atol=0.005)   # back at home


def test_moves_by_commanded_deltas_within_tolerance(make_arm):
    "Each delta lands within the stated tolerance 1.5 s after the command (rotations take longer than translations)."
    arm = make_arm(watchdog_periods=40)
    arm.reset(0)
    deltas = [[0.02, 0, 0, 0, 0, 0, 0], [0, 0.02, 0, 0, 0, 0, 0], [0, 0, -0.02, 0, 0, 0, 0], [-0.01, -0.01, 0.01, 0, 0, 0, 0],
              [0, 0, 0, 0.1, 0, 0, 0], [0, 0, 0, 0, 0.1, 0, 0], [0, 0, 0, 0, 0, 0.1, 0], [0.01, -0.01, 0.01, -0.1, -0.1, -0.1, 0]]
    report = []
    for a in deltas:
        before = arm.state()
        t = time.monotonic()
        obs = arm.step(a)
        assert 0.24 <= time.monotonic() - t < 0.5                                   # one control period
        assert not obs.info["clipped_step"] and not obs.info["clipped_workspace"]
        expect = compute_new_pose(torch.from_numpy(before), torch.tensor(a, dtype=torch.float64)).numpy()
        time.sleep(max(0.0, t + SETTLE_S - time.monotonic()))
        report.append(_errors(expect, arm.state()))
    worst = np.max(report, axis=0)
    print(f"worst error {SETTLE_S} s after a step: {1000 * worst[0]:.2f} mm, {worst[1]:.4f} rad")
    assert worst[0] < MOVE_TOL_M and worst[1] < MOVE_TOL_RAD


def test_policy_rate_loop(make_arm):
    "Eight 1 cm steps at 4 Hz: 2 s, moving the right way; the arm lags (measured anchor) but never overshoots."
    arm = make_arm(watchdog_periods=40)
    arm.reset(0)
    start = arm.state()
    t = time.monotonic()
    for _ in range(8):
        obs = arm.step([0.01, 0, 0, 0, 0, 0, 0])
    elapsed = time.monotonic() - t
    moved_at_end = obs.state[0] - start[0]
    moved = _settle(arm, 1.0)[0] - start[0]
    print(f"8 steps in {elapsed:.2f} s; moved {1000 * moved_at_end:.1f} mm by the last step, {1000 * moved:.1f} mm 1 s later")
    assert 1.95 < elapsed < 2.6
    assert 0.02 < moved < 0.08 + MOVE_TOL_M


def test_gripper_move_and_grasp(make_arm):
    arm = make_arm()
    arm.reset(0)
    obs = arm.step([0, 0, 0, 0, 0, 0, 1.0])
    assert obs.info["gripper_command"] == "grasp" and arm.wait_gripper(5.0)
    assert arm.state()[6] == pytest.approx(1.0, abs=0.01)                       # closed on nothing: the sim's hand is empty
    obs = arm.step([0, 0, 0, 0, 0, 0, -0.5])
    assert obs.info["gripper_command"] == "move" and arm.wait_gripper(5.0)
    assert arm.state()[6] == pytest.approx(0.5, abs=0.01)
    obs = arm.step([0, 0, 0, 0, 0, 0, 0.01])                                     # inside the dead band: no command
    assert obs.info["gripper_command"] is None
    obs = arm.step([0, 0, 0, 0, 0, 0, -2.0])
    assert obs.info["clipped_gripper"] and obs.info["gripper_target"] == 0.0 and arm.wait_gripper(5.0)
    obs = arm.step(np.zeros(7))
    assert obs.state[6] == pytest.approx(0.0, abs=0.01) and obs.info["gripper_last"]["ok"]


def test_bad_commands_are_refused_and_the_arm_does_not_move(make_arm):
    arm = make_arm()
    arm.reset(0)
    target, state = arm._loop.target(), arm.state()
    for bad in ([np.nan] * 7, [0, 0, np.inf, 0, 0, 0, 0], np.zeros(6), np.zeros((7, 1)), ["a"] * 7, [True] * 7,
                np.zeros(7, complex), None, torch.full((7,), float("nan"))):
        with pytest.raises(ValueError, match="did not move"):
            arm.step(bad)
    time.sleep(0.3)
    np.testing.assert_array_equal(arm._loop.target(), target)
    assert _errors(state, arm.state())[0] < 0.001
    assert arm.step(np.zeros(7)).state.shape == (7,)                            # and it still works


def test_workspace_box_and_step_limits_clip(make_arm):
    arm = make_arm(watchdog_periods=40)
    arm.reset(0)
    start = arm.state()
    obs = arm.step([0.10, 0, 0, 0, 0, 0.5, 0])                                  # 10 cm and 0.5 rad: clipped to 2 cm, 0.1 rad
    assert obs.info["clipped_step"] and not obs.info["clipped_workspace"]
    np.testing.assert_allclose(obs.info["action_applied"][[0, 5]], [0.02, 0.1])
    assert _settle(arm)[0] - start[0] == pytest.approx(0.02, abs=MOVE_TOL_M)
    top = arm.state()[2] + 0.01
    arm.workspace = Workspace(arm.workspace.low, (0.70, 0.30, top))
    for _ in range(3):
        obs = arm.step([0, 0, 0.02, 0, 0, 0, 0])
        assert obs.info["clipped_workspace"] and obs.info["target_state"][2] <= top + 1e-9
    assert _settle(arm)[2] < top + MOVE_TOL_M


def test_watchdog_holds_the_pose_when_commands_stop(make_arm):
    arm = make_arm(watchdog_periods=2)                                           # 0.5 s at 4 Hz
    arm.reset(0)
    arm.step([0.02, 0, 0, 0, 0, 0, 0])
    time.sleep(1.0)
    holds = [e for e in arm.events if e["event"] == "watchdog_hold"]
    assert len(holds) == 1 and holds[0]["idle_s"] >= 0.5                       # once, not every tick
    target, deadline = arm._loop.target(), time.monotonic() + 1.5
    while np.linalg.norm(target[:3] - arm.state()[:3]) > 0.002 and time.monotonic() < deadline:
        time.sleep(0.05)                                                         # the ramp brakes, then rests there
    assert np.linalg.norm(target[:3] - arm.state()[:3]) < 0.002
    np.testing.assert_array_equal(arm._loop.target(), target)                  # and the hold stays put
    obs = arm.step(np.zeros(7))
    assert obs.info["watchdog_held"]["idle_s"] >= 0.5
    assert "watchdog_held" not in arm.step(np.zeros(7)).info


def test_reflex_is_recovered_and_reported(make_arm):
    "A target jump the robot's own limits reject (rate limiting off, robot backend) aborts with a reflex."
    arm = make_arm(loop_options=dict(backend="robot", limit_rate=False, max_jerk=10000.0), max_velocity=5.0, max_acceleration=100.0)
    arm.reset(0)
    with pytest.raises(ArmError) as e:
        for _ in range(4):
            arm.step([0, 0, -0.02, 0, 0, 0, 0])
    err = e.value
    assert err.kind == "reflex" and err.recovered and err.errors
    assert "reflex" in str(err) and "automatic_error_recovery" in err.recovery and err.last_observation is not None
    assert arm._loop.running and arm.state().shape == (7,)
    assert arm.events[-1]["event"] == "error" and arm.events[-1]["kind"] == "reflex"


def test_deviation_guard_is_recovered_and_reported(make_arm):
    arm = make_arm(max_deviation=0.01)
    arm.reset(0)
    with pytest.raises(ArmError) as e:
        for _ in range(16):
            arm.step([0.02, 0, 0, 0, 0, 0, 0])
    assert e.value.kind == "deviation" and e.value.recovered and "max_deviation" in str(e.value)
    assert arm.step(np.zeros(7)).info["robot_mode"] == "move"


def test_ctrl_c_holds_and_stops_cleanly(make_arm):
    arm = make_arm()
    arm.reset(0)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            arm.step([0.02, 0, 0, 0, 0, 0, 0])
    finally:
        timer.cancel()
    assert arm._loop is None and arm.events[-1]["event"] == "interrupted"
    assert arm.robot.read_once().robot_mode == "idle"                          # no motion is running
    obs = arm.step(np.zeros(7))                                                 # the next step re-opens the loop there
    assert obs.info["loop_reopened"] and obs.info["robot_mode"] == "move"


def test_close_is_clean_idempotent_and_final(make_arm):
    arm = make_arm()
    arm.reset(0)
    arm.step([0.01, 0, 0, 0, 0, 0, 0])
    t = time.monotonic()
    with pytest.raises(ArmError, match="another client") as busy:              # the sim serves one client at a time
        FrankaArm("127.0.0.1", connect_timeout=1.0)
    assert busy.value.kind == "network" and time.monotonic() - t < 3
    arm.close()
    arm.close()
    with pytest.raises(ArmError, match="closed"):
        arm.step(np.zeros(7))
    with FrankaArm("127.0.0.1") as again:                                      # the robot is free for the next client
        assert again.robot.read_once().robot_mode == "idle"
    del busy
    gc.collect()


def test_sim_killed_mid_session_then_reconnect(sim, make_arm):
    arm = make_arm()
    arm.reset(0)
    last = arm.step([0.01, 0, 0, 0, 0, 0, 0])
    sim.kill()
    t = time.monotonic()
    with pytest.raises(ArmError) as e:
        for _ in range(8):
            last = arm.step([0.0, 0.005, 0, 0, 0, 0, 0])
    seconds = time.monotonic() - t
    err = e.value
    print(f"network loss reported {seconds:.2f} s after the kill: {err}")
    assert err.kind == "network" and not err.recovered and seconds < 3
    assert err.last_observation is last                                        # nothing recorded is lost
    assert "reset()" in err.recovery
    with pytest.raises(ArmError, match="lost") as again:
        arm.step(np.zeros(7))
    assert again.value.kind == "network"
    sim.start(timeout=60)
    obs = arm.reset(1)                                                          # the same FrankaArm reconnects
    assert "reconnected" in obs.info["reset"]
    before = arm.state()
    arm.step([0.02, 0, 0, 0, 0, 0, 0])
    assert _settle(arm)[0] - before[0] == pytest.approx(0.02, abs=MOVE_TOL_M)
    sim.kill()
    t = time.monotonic()
    arm.close()                                                                 # never raises from a dead sim
    assert time.monotonic() - t < 5


def test_robot_session_on_franka_sim_towards_a_captured_goal(sim, tmp_path, fix, hp):
    """The session job on `franka://127.0.0.1` with a video file as its camera: a goal captured on the arm, two planned
    steps executed and recorded, success judged from the recorded pose."""
    import json
    import pandas as pd
    import papermill as pm
    from vjepa2wb import load_checkpoint, save_checkpoint
    from vjepa2wb.data import write_video
    from vjepa2wb.tasks import capture_goal, save_goal
    if not sim.alive:
        sim.start(timeout=60)
    size = hp["encoder"]["img_size"]
    ckpt = save_checkpoint(load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"]),
                           tmp_path / "ac_model")
    write_video(tmp_path / "view.mp4", np.tile(np.linspace(30, 220, 48, dtype=np.uint8)[None, None, :, None], (8, 32, 1, 3)), fps=10)
    with FrankaArm("127.0.0.1", camera=f"file:{tmp_path / 'view.mp4'}", frame_size=size) as arm:
        goal = save_goal(capture_goal(arm, moves=[[0.02, 0, 0, 0, 0, 0, 0]]), tmp_path / "goal.npz")
    out = tmp_path / "session"
    pm.execute_notebook(ROOT / "nbs" / "robot_session.ipynb", tmp_path / "out.ipynb", cwd=ROOT / "nbs", kernel_name="python3",
                        progress_bar=False, execution_timeout=600,
                        parameters=dict(checkpoint=str(ckpt), arm="franka://127.0.0.1", camera=f"file:{tmp_path / 'view.mp4'}",
                                        task="captured", goal=str(goal), episodes=1, max_steps=2, size=size,
                                        planner={"samples": 8, "iterations": 1, "topk": 2}, output_dir=str(out)))
    rows = pd.read_csv(out / "episodes.csv")
    assert rows.task.tolist() == ["captured"] and rows.steps.tolist() == [2] and rows.final_distance_cm.iloc[0] < 50
    steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(np.isfinite(s["state"]).all() for s in steps)
