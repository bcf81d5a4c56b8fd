"""Evaluation data: the EK100Clips contract, loading through a DataLoader, and bad input end to end."""
import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa2wb.data import write_video
from vjepa2wb.eval_data import (EK100_COLUMNS, EK100Clips, LabelledClips, classification_items, collate_ek100,
                                collate_views)

HEADER = "participant_id,video_id,start_frame,stop_frame,verb_class,noun_class"


def index_video(path: Path, n: int, fps: int = 10) -> Path:
    "A lossless mp4 whose frame i is filled with the value i."
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, np.stack([np.full((16, 16, 3), i, np.uint8) for i in range(n)]), fps=fps, lossless=True)


@pytest.fixture
def ek100(tmp_path):
    "A root with one 40-frame video at 10 fps, and a training csv of three actions (one on a missing video)."
    index_video(tmp_path / "EPIC" / "P01" / "videos" / "P01_01.MP4", 40)
    csv = tmp_path / "train.csv"
    csv.write_text(f"{HEADER}\nP01,P01_01,30,38,2,5\nP01,P01_01,15,25,0,7\nP09,P09_02,10,20,0,5\n")
    return csv, tmp_path / "EPIC"


def test_ek100clips_signature_is_the_contract():
    params = inspect.signature(EK100Clips).parameters
    assert list(params)[:7] == ["annotations_csv", "video_root", "frames", "fps", "anticipation_time",
                                "anticipation_point", "size"]
    assert [params[k].default for k in ("frames", "fps", "anticipation_time", "anticipation_point", "size")] == \
        [16, 4, 1.0, 1.0, None]


def test_ek100_through_a_dataloader_counts_the_missing_video(ek100):
    csv, root = ek100
    ds = pickle.loads(pickle.dumps(EK100Clips(csv, root, frames=4, fps=5)))     # what worker processes receive
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_ek100)
    (batch,) = list(loader)
    assert batch["video"].shape == (2, 4, 16, 16, 3)
    assert batch["video"][:, :, 0, 0, 0].tolist() == batch["frame_indices"].tolist() == [[12, 14, 16, 18], [0, 0, 1, 3]]
    assert [s.reason.split(":")[0] for s in batch["skipped"]] == ["missing file"]
    assert ds.missing_videos == ["P09_02"]


@pytest.mark.parametrize("column", EK100_COLUMNS)
def test_ek100_refuses_a_missing_column_by_name(tmp_path, column):
    names = HEADER.split(",")
    keep = [i for i, c in enumerate(names) if c != column]
    csv = tmp_path / "ann.csv"
    csv.write_text(",".join(names[i] for i in keep) + "\n" + ",".join(["P01", "P01_01", "1", "2", "3", "4"][i] for i in keep) + "\n")
    with pytest.raises(ValueError, match=f"ann.csv: no column '{column}'"):
        EK100Clips(csv, tmp_path)


def test_empty_ek100_csv_is_refused(tmp_path):
    csv = tmp_path / "ann.csv"
    csv.write_text(HEADER + "\n")
    with pytest.raises(ValueError, match="ann.csv: no rows under the header"):
        EK100Clips(csv, tmp_path)


def test_kinetics_csv_to_eval_batch_skips_the_missing_video(tmp_path):
    index_video(tmp_path / "videos" / "abc_000001_000011.mp4", 24)
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end\nsurf,abc,1,11\nski,gone,0,10\n")
    items, classes = classification_items(tmp_path / "k.csv", video_root=tmp_path / "videos")
    assert classes == ["ski", "surf"]
    ds = LabelledClips(items, frames=4, frame_step=2, size=16, clips=3, views=1, num_classes=len(classes))
    batch = collate_views([ds[i] for i in range(len(ds))])
    assert batch["video"].shape == (1, 3, 4, 16, 16, 3) and batch["label"].tolist() == [1]
    assert [(Path(s.path).name, s.reason) for s in batch["skipped"]] == [("gone_000000_000010.mp4", "missing file")]
