"""LeRobot's own writing and reading of a tiny LeRobot v3.0 dataset: the reference that vjepa2wb's reader is checked against.

Not a test module (pytest collects only test_*.py). Run it with the separate LeRobot venv (`make lerobot-venv`):

    .venv-lerobot/bin/python tests/lerobot_reference.py write tests/fixtures/lerobot_v30/dataset
    .venv-lerobot/bin/python tests/lerobot_reference.py read  tests/fixtures/lerobot_v30/dataset tests/fixtures/lerobot_v30/reference.npz

`write` records the dataset with `LeRobotDataset.create` + `add_frame` + `save_episode` + `finalize` (LeRobot's default
codec, libsvtav1). `read` opens it with `LeRobotDataset(repo_id, root=...)`, LeRobot's default decoder (torchcodec), and
saves, per episode e, `ep{e}_{key}` for every feature: camera frames as uint8 (T, H, W, 3), recovered exactly from
LeRobot's float32 CHW tensors in [0, 1] (it divides the decoded uint8 by 255), plus state, action, timestamp,
frame_index, index, episode_index, task_index and task.

Two pieces of glue, because the venv reuses the project's CPU torch 2.13 (see the Makefile's `lerobot-venv`):
- torchcodec's CPU wheel needs FFmpeg's shared libraries by their plain sonames; the venv links them
  (`.venv-lerobot/ffmpeg-libs/`) to the FFmpeg that PyAV's wheel bundles (`av.libs/`), and this script re-executes
  itself once with those folders on LD_LIBRARY_PATH.
- PyPI's torchvision for torch 2.13 is a CUDA build whose C++ ops cannot load on CPU torch; its Python part
  (all LeRobot imports from it) works once the two op schemas it registers fake kernels for are declared.
  No torchvision op is used on the video path (torchcodec decodes, PyAV encodes).
"""

import importlib.util
import os
import sys
from pathlib import Path

REPO_ID = "vjepa2wb/lerobot_v30_fixture"
FPS = 10
H, W = 48, 64
CAMERAS = ("observation.images.front", "observation.images.wrist")
EPISODE_LENGTHS = (7, 12, 9)
TASKS = ("push the red block to the left", "lift the cube", "open the drawer")
STATE_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper_width"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
SQUARE = 12  # side of the moving square, pixels


def _ffmpeg_lib_dirs() -> list[str]:
    spec = importlib.util.find_spec("av")
    av_libs = Path(spec.submodule_search_locations[0]).resolve().parent / "av.libs"
    return [str(Path(sys.prefix) / "ffmpeg-libs"), str(av_libs)]


def _reexec_with_ffmpeg_on_path() -> None:
    dirs = _ffmpeg_lib_dirs()
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if all(d in current.split(os.pathsep) for d in dirs):
        return
    if not Path(dirs[0]).is_dir():
        sys.exit(f"{dirs[0]} is missing: build the venv with `make lerobot-venv`")
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(dirs + ([current] if current else [])))
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _import_torchvision() -> None:
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:  # the CUDA-only wheel on CPU torch: `operator torchvision::nms does not exist`
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        torch.library.define("torchvision::nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        torch.library.define("torchvision::qnms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401


def _setup() -> None:
    _reexec_with_ffmpeg_on_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local root only, never the hub
    if "HF_HOME" not in os.environ:  # datasets' Arrow cache of the parquet files: keep it out of ~/.cache
        import atexit
        import shutil
        import tempfile

        os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lerobot_reference_hf_")
        atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
    _import_torchvision()


def grey_level(camera: int, global_frame: int) -> int:
    """The flat background level that identifies a frame: 7 grey levels apart from frame to frame."""
    g = 24 + 7 * global_frame
    return g if camera == 0 else 231 - 7 * global_frame


def source_frame(camera: int, episode: int, frame: int, global_frame: int):
    """What was recorded: a flat grey that encodes the frame, plus a square (white on dark grey, black on light grey)
    that moves left to right on the front camera and top to bottom on the wrist camera, its start set by the episode."""
    import numpy as np

    img = np.full((H, W, 3), grey_level(camera, global_frame), np.uint8)
    if camera == 0:
        top, left = 4 + 8 * episode, (4 * frame) % (W - SQUARE)
    else:
        top, left = (3 * frame) % (H - SQUARE), 4 + 12 * episode
    img[top : top + SQUARE, left : left + SQUARE] = 255 if grey_level(camera, global_frame) < 128 else 0
    return img, (top, left)


def write(out_dir: Path) -> None:
    import shutil

    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if out_dir.exists():
        if not (out_dir / "meta" / "info.json").exists() and any(out_dir.iterdir()):
            sys.exit(f"{out_dir} exists and is not a LeRobot dataset: not overwriting it")
        shutil.rmtree(out_dir)
    features = {
        **{cam: {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]} for cam in CAMERAS},
        "observation.state": {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES},
    }
    ds = LeRobotDataset.create(repo_id=REPO_ID, fps=FPS, features=features, root=out_dir, robot_type="panda",
                               use_videos=True)  # vcodec: LeRobot's default
    print(f"vcodec={ds.vcodec} video_backend={ds.video_backend}")
    g = 0
    for e, (n, task) in enumerate(zip(EPISODE_LENGTHS, TASKS)):
        for i in range(n):
            state = np.array([0.1 * e, 0.01 * i, 0.5, 0.0, 0.0, 0.0, 1.0, 0.04 + 0.001 * g], np.float32)
            action = np.array([0.001 * g, -0.002 * i, 0.003 * e, 0.0, 0.0, 0.01 * i, float(i % 2)], np.float32)
            frame = {cam: source_frame(c, e, i, g)[0] for c, cam in enumerate(CAMERAS)}
            ds.add_frame({**frame, "observation.state": state, "action": action, "task": task})
            g += 1
        ds.save_episode(parallel_encoding=False)  # one process: the cameras one after the other
    ds.finalize()
    print(f"wrote {out_dir}: {len(EPISODE_LENGTHS)} episodes, {g} frames")


def read(dataset_dir: Path, out_npz: Path) -> None:
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(REPO_ID, root=dataset_dir)
    print(f"video_backend={ds.video_backend} tolerance_s={ds.tolerance_s} fps={ds.fps} "
          f"episodes={ds.num_episodes} frames={ds.num_frames}")
    rows: dict[int, list[dict]] = {}
    for idx in range(len(ds)):
        item = ds[idx]
        rows.setdefault(int(item["episode_index"]), []).append(item)
    out: dict[str, np.ndarray] = {
        "fps": np.int64(ds.fps), "tolerance_s": np.float64(ds.tolerance_s),
        "video_backend": np.str_(ds.video_backend), "episodes": np.array(sorted(rows), np.int64),
    }
    g = 0
    for e, items in sorted(rows.items()):
        for key in items[0]:
            if key in ds.meta.video_keys:
                x = np.stack([it[key].numpy() for it in items]) * 255  # float32 (T, 3, H, W) in [0, 1]
                assert np.abs(x - np.round(x)).max() < 1e-3, "frames are not k/255"
                out[f"ep{e}_{key}"] = np.round(x).astype(np.uint8).transpose(0, 2, 3, 1)  # (T, H, W, 3)
            elif key == "task":
                assert len({it[key] for it in items}) == 1
                out[f"ep{e}_task"] = np.str_(items[0][key])
            else:
                out[f"ep{e}_{key}"] = np.stack([it[key].numpy() for it in items])
        n = len(items)  # what was recorded, for frame mix-up checks: grey level and square position per frame
        for c, cam in enumerate(CAMERAS if tuple(ds.meta.video_keys) == CAMERAS else ()):
            out[f"ep{e}_{cam}_source_grey"] = np.array([grey_level(c, g + i) for i in range(n)], np.int64)
            out[f"ep{e}_{cam}_source_square_topleft"] = np.array(
                [source_frame(c, e, i, g + i)[1] for i in range(n)], np.int64)
        g += n
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_npz, **out)
    print(f"wrote {out_npz}: {len(out)} arrays")


def check() -> None:
    import torchcodec
    from torchcodec.decoders import VideoDecoder  # noqa: F401  loads torchcodec's FFmpeg libraries

    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
    from lerobot.datasets.video_utils import get_safe_default_codec

    print(f"lerobot {lerobot.__version__}, torchcodec {torchcodec.__version__}, "
          f"default decoder {get_safe_default_codec()}")


def main(argv: list[str]) -> None:
    if argv == ["check"]:
        _setup()
        check()
    elif len(argv) == 2 and argv[0] == "write":
        _setup()
        write(Path(argv[1]))
    elif len(argv) == 3 and argv[0] == "read":
        _setup()
        read(Path(argv[1]), Path(argv[2]))
    else:
        sys.exit("usage: .venv-lerobot/bin/python tests/lerobot_reference.py check | write OUT_DIR | read DATASET_DIR OUT.npz")


if __name__ == "__main__":
    main(sys.argv[1:])
