"""Robot data as users have it: DROID raw as DROID writes it, LeRobot sets with other state layouts, and what a
clip costs in memory."""
import json
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from vjepa2wb.data import write_video
from vjepa2wb.episodes import (Episode, RobotClips, droid_paths_csv, find_episodes, load_episode, open_episode,
                               read_episode, write_droid, write_lerobot)


def _episode(T: int, H: int = 32, W: int = 32, fps: float = 15.0, seed: int = 0) -> Episode:
    "Frame k carries its index in its grey level (mod 256) and a bright column at k mod W; states a random walk."
    rng = np.random.default_rng(seed)
    frames = np.zeros((T, H, W, 3), np.uint8)
    frames[:] = (np.arange(T) % 256).astype(np.uint8)[:, None, None, None]
    frames[np.arange(T), :, np.arange(T) % W] = 255
    states = np.cumsum(rng.normal(0, 0.005, (T, 7)), 0) + [0.5, 0, 0.3, 3.1, 0, 0, 0.5]
    return Episode(frames, states, np.zeros((T, 7)), fps)


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("layout", ["droid", "v3.0"])
def test_clip_memory_does_not_grow_with_episode_length(tmp_path, layout):
    """Case: one clip (8 frames at 4 fps) from a 2 s and from a 20 s recording at 15 fps, 120x160.
    Expected: the clip's peak memory is the same for both (within 1.5x), and far below decoding the long episode whole."""
    roots = {}
    for name, T in (("short", 30), ("long", 300)):
        ep = _episode(T, 120, 160)
        roots[name] = tmp_path / name
        write_droid(ep, roots[name], "ep") if layout == "droid" else write_lerobot(ep, roots[name], version="v3.0")
    peaks = {}
    for name, root in roots.items():
        clips = RobotClips(root, frames=8, fps=4.0, seed=3)
        peaks[name] = _peak_mb(lambda: clips[0]["video"].shape)
    whole = _peak_mb(lambda: read_episode(*find_episodes(roots["long"])[0]).frames.shape)
    print(f"{layout}: clip peak {peaks['short']:.2f} MB (2 s episode), {peaks['long']:.2f} MB (20 s); whole 20 s episode {whole:.1f} MB")
    clip_bytes = 8 * 120 * 160 * 3 / 1e6
    assert peaks["long"] < 1.5 * peaks["short"] + 0.5, peaks
    assert peaks["long"] < 3 * clip_bytes + 1.0, (peaks, clip_bytes)
    assert whole > 10 * peaks["long"], (whole, peaks)


def test_clip_memory_with_size_does_not_grow_with_resolution(tmp_path):
    """Case: a clip at size 64 from a 120x160 and from a 480x640 recording.
    Expected: both clips are 64 on the short side, and the peak memory is the same within 1.5x (frames are scaled as decoded)."""
    peaks, shapes = {}, {}
    for H, W in ((120, 160), (480, 640)):
        write_lerobot(_episode(40, H, W), tmp_path / f"r{H}", version="v3.0")
        clips = RobotClips(tmp_path / f"r{H}", frames=4, fps=4.0, size=64)
        peaks[H] = _peak_mb(lambda: shapes.setdefault(H, tuple(clips[0]["video"].shape)))
    print(f"size-64 clip peak: {peaks[120]:.2f} MB from 120x160, {peaks[480]:.2f} MB from 480x640")
    assert shapes == {120: (4, 64, 85, 3), 480: (4, 64, 85, 3)}
    assert peaks[480] < 1.5 * peaks[120] + 0.5, peaks


def _real_droid(root: Path, T: int = 45) -> Path:
    """An episode folder as DROID writes it: three cameras by serial, no left/right keys, the robot's clock at an
    irregular 15 Hz, extrinsics per camera."""
    d = root / "AUTOLab" / "success" / "2023-07-07" / "Fri_Jul__7_09:42:23_2023"
    (d / "recordings" / "MP4").mkdir(parents=True)
    serials = {"ext1": "22008760", "ext2": "24400334", "wrist": "18026681"}
    for k, (cam, serial) in enumerate(serials.items()):
        frames = _episode(T, 32, 48, seed=k).frames.copy()
        frames[..., k] = 200                                   # each camera its own colour
        write_video(d / "recordings" / "MP4" / f"{serial}.mp4", frames, fps=15, lossless=True)
    rng = np.random.default_rng(0)
    t = 1_688_723_000 + np.cumsum(rng.uniform(0.05, 0.083, T))
    ep = _episode(T)
    with h5py.File(d / "trajectory.h5", "w") as h:
        h["observation/robot_state/cartesian_position"] = ep.states[:, :6]
        h["observation/robot_state/gripper_position"] = ep.states[:, 6]
        h["observation/robot_state/joint_positions"] = np.zeros((T, 7))
        for k, serial in enumerate(serials.values()):
            h[f"observation/camera_extrinsics/{serial}_left"] = np.tile([0.1 * k, 0.5, 0.4, 0, 0, k], (T, 1))
            h[f"observation/camera_extrinsics/{serial}_right"] = np.tile([0.1 * k + 0.06, 0.5, 0.4, 0, 0, k], (T, 1))
        h["observation/timestamp/robot_state/robot_timestamp_seconds"] = np.floor(t).astype(np.int64)
        h["observation/timestamp/robot_state/robot_timestamp_nanos"] = ((t - np.floor(t)) * 1e9).astype(np.int64)
        h["action/cartesian_position"] = ep.states[:, :6]
    meta = {"uuid": "AUTOLab+5d05c5aa+2023-07-07-09h-42m-23s", "trajectory_length": T,
            **{f"{c}_cam_serial": s for c, s in serials.items()},
            **{f"{c}_mp4_path": f"success/2023-07-07/Fri_Jul__7_09:42:23_2023/recordings/MP4/{s}.mp4" for c, s in serials.items()}}
    (d / "metadata_AUTOLab+5d05c5aa+2023-07-07-09h-42m-23s.json").write_text(json.dumps(meta))
    return d


def test_real_droid_layout_cameras_extrinsics_and_clock(tmp_path):
    """Case: a DROID raw episode with ext1, ext2 and wrist cameras and no `left_mp4_path` (a KeyError before).
    Expected: ext1 by default; each camera reads its own video and its own extrinsics; time is the robot's clock;
    an unknown camera is refused with the cameras there are; the paths csv lists the folder."""
    d = _real_droid(tmp_path / "droid_raw")
    (kind, path, index), = find_episodes(tmp_path / "droid_raw")
    for k, cam in enumerate(["ext1", "ext2", "wrist"]):
        rec = open_episode(kind, path, index, camera=cam)
        assert rec.frames([0, 5])[:, 0, 0, k].tolist() == [200, 200]
        assert np.allclose(rec.extrinsics[:, 0], 0.1 * k) and np.allclose(rec.extrinsics[:, 5], k)
    default = open_episode(kind, path, index)
    assert default.meta["camera"] == "22008760.mp4"
    assert np.all(np.diff(default.timestamps) > 0.049) and default.timestamps[0] == 0 and 2.2 < default.timestamps[-1] < 3.8
    with pytest.raises(ValueError, match=r"no camera 'left' in the metadata; it has \['ext1', 'ext2', 'wrist'\]"):
        open_episode(kind, path, index, camera="left")
    clip = RobotClips(tmp_path / "droid_raw", frames=8, fps=4.0, camera="wrist")[0]
    assert abs(float(clip["times"][-1]) - 1.75) < 0.05            # 1.75 physical seconds, whatever the mp4 says
    assert tuple(clip["extrinsics"].shape) == (8, 6)
    assert droid_paths_csv(tmp_path / "droid_raw", tmp_path / "paths.csv") == 1
    assert pd.read_csv(tmp_path / "paths.csv", header=None, delimiter=" ").values[:, 0].tolist() == [str(d.resolve())]


def _eight_dim(root: Path, ep: Episode, names) -> None:
    "A v2.1 set whose observation.state is [x, y, z, qx, qy, qz, qw, width] (a real set's 8-D layout)."
    import torch
    from vjepa2wb.pose import euler_to_matrix
    write_lerobot(ep, root)
    R = euler_to_matrix(torch.from_numpy(ep.states[:, 3:6])).numpy()
    w = np.sqrt(1 + R[:, 0, 0] + R[:, 1, 1] + R[:, 2, 2]) / 2
    q = np.stack([(R[:, 2, 1] - R[:, 1, 2]) / (4 * w), (R[:, 0, 2] - R[:, 2, 0]) / (4 * w), (R[:, 1, 0] - R[:, 0, 1]) / (4 * w), w], 1)
    width = (1 - ep.states[:, 6]) * 0.08
    data = root / "data" / "chunk-000" / "episode_000000.parquet"
    df = pd.read_parquet(data)
    df["observation.state"] = list(np.concatenate([ep.states[:, :3], q, width[:, None]], 1).astype(np.float32))
    data.write_bytes(df.to_parquet(index=False))
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.state"] |= {"shape": [len(names)], "names": names}
    (root / "meta" / "info.json").write_text(json.dumps(info))


def test_eight_dim_state_needs_a_declared_convention(tmp_path):
    """Case: a v2.1 set with an 8-D state (quaternion and a width), skipped before ("must be [6, 7]").
    Expected: with no convention it is refused, naming its columns; declared, it reads the original states."""
    ep = _episode(12)
    ep.states[:, 3:6] = np.random.default_rng(1).uniform(-1, 1, (12, 3))
    _eight_dim(tmp_path / "eight", ep, ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width"])
    entry = find_episodes(tmp_path / "eight")[0]
    skipped = load_episode(*entry)
    assert "observation.state is ['x', 'y', 'z', 'qx', 'qy', 'qz', 'qw', 'gripper_width'], not the workbench's" in skipped.reason
    state = {"orientation": "observation.state[3:7]", "rotation": "quat_xyzw", "gripper": "observation.state[7]",
             "gripper_form": "width", "gripper_max": 0.08}
    got = read_episode(*entry, state=state)
    assert np.allclose(got.states, ep.states, atol=1e-5)


def test_joint_space_dataset_is_refused(tmp_path):
    "Case: an SO-100-style set whose state is joint angles. Expected: refused, saying the AC model needs an end-effector pose."
    _eight_dim(tmp_path / "so100", _episode(6), ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper", "a", "b"])
    skipped = load_episode(*find_episodes(tmp_path / "so100")[0])
    assert "holds joint positions (shoulder_pan, shoulder_lift" in skipped.reason and "needs an end-effector pose" in skipped.reason


def test_rows_that_disagree_with_meta_and_backward_time_are_skipped_with_the_file(tmp_path):
    """Case: a v3.0 episode whose rows are renumbered, and one whose timestamps go backwards.
    Expected: each skipped with a reason naming the data file."""
    for _ in range(3):
        write_lerobot(_episode(10), tmp_path / "d", version="v3.0")
    data = tmp_path / "d" / "data" / "chunk-000" / "file-001.parquet"
    df = pd.read_parquet(data); df["index"] += 100; data.write_bytes(df.to_parquet(index=False))
    data = tmp_path / "d" / "data" / "chunk-000" / "file-002.parquet"
    df = pd.read_parquet(data); df.loc[4, "timestamp"] = 0.1; data.write_bytes(df.to_parquet(index=False))
    reasons = [getattr(load_episode(*e), "reason", None) for e in find_episodes(tmp_path / "d")]
    assert reasons[0] is None
    assert reasons[1] == "data/chunk-000/file-001.parquet: episode 1 holds rows 110..120, meta/episodes gives 10..20"
    assert reasons[2].startswith("timestamps go backwards or repeat: frame 4 at 0.1000 s") and reasons[2].endswith("file-002.parquet#2")


LEROBOT_FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v30"
EIGHT_D = {"orientation": "observation.state[3:7]", "rotation": "quat_xyzw", "gripper": "observation.state[7]",
           "gripper_form": "width", "gripper_max": 0.08}


def test_a_v30_set_written_by_lerobot_reads_as_lerobot_reads_it():
    """Case: a v3.0 set that LeRobot 0.4.4 wrote (AV1, two cameras, episodes concatenated in one mp4 per camera).
    Expected: every episode's frames, per camera, equal LeRobot's own decoding; timestamps and states agree row by row."""
    from vjepa2wb.conventions import state_convention
    ref = np.load(LEROBOT_FIXTURE / "reference.npz")
    entries = find_episodes(LEROBOT_FIXTURE / "dataset")
    assert [i for _, _, i in entries] == ref["episodes"].tolist()
    for kind, path, e in entries:
        for camera in ("front", "observation.images.wrist"):
            ep = read_episode(kind, path, e, camera=camera, state=EIGHT_D)
            key = camera if camera.startswith("observation.") else f"observation.images.{camera}"
            np.testing.assert_array_equal(ep.frames, ref[f"ep{e}_{key}"])
        np.testing.assert_allclose(ep.timestamps, ref[f"ep{e}_timestamp"] - ref[f"ep{e}_timestamp"][0], atol=1e-6)
        expected = state_convention(EIGHT_D).to_states({"observation.state": ref[f"ep{e}_observation.state"]})
        np.testing.assert_allclose(ep.states, expected, atol=1e-12)
        assert ep.meta["camera"] == "observation.images.wrist"


def test_an_undecodable_video_is_skipped_with_its_reason(tmp_path):
    "Case: the LeRobot set's AV1 file cut in half. Expected: its episodes are skipped, naming the file and why."
    import shutil
    shutil.copytree(LEROBOT_FIXTURE / "dataset", tmp_path / "d")
    video = tmp_path / "d" / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
    video.write_bytes(video.read_bytes()[:1500])
    skipped = load_episode(*find_episodes(tmp_path / "d")[2], state=EIGHT_D)
    assert "file-000.mp4" in skipped.reason and ("cannot decode" in skipped.reason or "unreadable video" in skipped.reason
                                                  or "no frame within" in skipped.reason), skipped.reason


@pytest.mark.slow
def test_lerobot_reads_our_v30_set_as_we_do(tmp_path):
    """Case: a v3.0 set written by `write_lerobot`, read by LeRobot 0.4.4's own `LeRobotDataset` (its venv made by
    `make lerobot-venv`). Expected: LeRobot's frames, states and timestamps equal ours."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["make", "-s", "lerobot-venv"], cwd=root, check=True, timeout=1200)
    for seed in range(2):
        write_lerobot(_episode(9 + 3 * seed, 32, 48, fps=10.0, seed=seed), tmp_path / "ours", version="v3.0")
    subprocess.run([str(root / ".venv-lerobot" / "bin" / "python"), str(root / "tests" / "lerobot_reference.py"), "read",
                    str(tmp_path / "ours"), str(tmp_path / "ref.npz")], check=True, timeout=600)
    ref = np.load(tmp_path / "ref.npz")
    for kind, path, e in find_episodes(tmp_path / "ours"):
        ep = read_episode(kind, path, e)
        np.testing.assert_array_equal(ep.frames, ref[f"ep{e}_observation.images.exterior"])
        np.testing.assert_allclose(ep.states, ref[f"ep{e}_observation.state"], atol=1e-6)
        np.testing.assert_allclose(ep.timestamps, ref[f"ep{e}_timestamp"], atol=1e-6)


def test_the_feature_cache_reads_a_users_set_by_its_camera_and_convention(tmp_path):
    """Case: AC training's feature cache over the LeRobot-written set, wrist camera, its 8-D state declared, at 5 fps
    from 10 fps. Expected: each episode resampled by its clock (7 frames over 0.6 s -> 4 at 5 fps), states converted;
    without the convention, every episode is skipped with the reason."""
    import torch
    from vjepa2wb.core import encoder_config
    from vjepa2wb.encoder import VisionTransformer
    from vjepa2wb.train_ac import FeatureCache
    torch.manual_seed(0)
    enc = VisionTransformer(encoder_config("tiny", depth=1, img_size=32, num_frames=2))
    cache = FeatureCache(enc, LEROBOT_FIXTURE / "dataset", crop=32, fps=5.0, cache_dir=tmp_path / "c", progress=False,
                         camera="wrist", state=EIGHT_D)
    assert [len(f) for f, _ in cache.items] == [4, 6, 5]
    ref = np.load(LEROBOT_FIXTURE / "reference.npz")
    from vjepa2wb.conventions import state_convention
    np.testing.assert_allclose(cache.items[1][1], state_convention(EIGHT_D).to_states({"observation.state": ref["ep1_observation.state"]})[::2])
    with pytest.raises(ValueError, match="not the workbench's"):
        FeatureCache(enc, LEROBOT_FIXTURE / "dataset", crop=32, fps=5.0, cache_dir=tmp_path / "c", progress=False)
