"""The run report reads as a report: built here from small synthetic stage summaries (a probe below random init, two planners
that differ), its summary states every figure of summary.json, success is told per planner, every video is captioned, and
the self-contained file carries its videos inside it."""
import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from vjepa2wb.data import write_video
from vjepa2wb.plots import write_run_report
from vjepa2wb.sessions import success_table

EPISODES = pd.DataFrame(dict(planner=["fast"] * 5 + ["paper"] * 5, episode=list(range(5)) * 2, seed=list(range(1000, 1005)) * 2,
                             task="reach", success=[True] * 9 + [False], final_distance_cm=[1.2, 1.5, 1.3, 1.4, 1.3, 2.0, 2.5, 3.0, 1.5, 23.8],
                             steps=10, seconds_per_action=[0.5] * 5 + [4.0] * 5, gflop_per_action=[1.0] * 5 + [100.0] * 5,
                             cem_iterations=[1.0] * 5 + [10.0] * 5))


def planner(name: str) -> dict:
    rows = EPISODES[EPISODES.planner == name]
    return dict(episodes=float(len(rows)), success_rate=float(rows.success.mean()), mean_final_distance_cm=float(rows.final_distance_cm.mean()),
                seconds_per_action=float(rows.seconds_per_action.mean()), gflop_per_action=float(rows.gflop_per_action.mean()),
                cem_iterations=float(rows.cem_iterations.mean()))


def references(task: str, oracle_distance: float = 0.4) -> pd.DataFrame:
    "The three references on the first five seeds: the oracle succeeds, random actions and the still arm do not."
    return pd.DataFrame([dict(planner=kind, episode=i, seed=1000 + i, task=task, success=kind == "oracle",
                              final_distance_cm=oracle_distance if kind == "oracle" else 20.0 + i, steps=0 if kind == "still" else 10,
                              seconds_per_action=0.0, gflop_per_action=0.0, cem_iterations=0.0)
                         for kind in ("oracle", "random", "still") for i in range(5)])


GRASP = pd.DataFrame(dict(planner="fast", episode=range(5), seed=range(1000, 1005), task="grasp", success=[True, False, False, False, False],
                          final_distance_cm=[0.6, 1.0, 1.2, 1.1, 1.4], steps=16, seconds_per_action=0.1, gflop_per_action=1.0, cem_iterations=1.0))


def session(task: str, episodes: pd.DataFrame) -> dict:
    "robot_session's summary keys for a task and its success table."
    main = episodes[episodes.planner == "fast"]
    return {"task": task, f"success_rate_{task}": float(main.success.mean()), f"mean_final_distance_cm_{task}": float(main.final_distance_cm.mean()),
            "success_table": success_table(pd.concat([episodes, references(task)]), "planner").to_dict(orient="records")}


RESULTS = {"collect_sim": dict(episodes=300, frames=3000),
           "pretrain": dict(final_loss=0.4, first_loss=0.9, probe_acc_pretrained=92.45, probe_acc_random=93.23, probe_val_examples=384,
                            probe_acc_motion_pretrained=90.1, probe_acc_motion_random=92.0,
                            probe_acc_appearance_pretrained=94.8, probe_acc_appearance_random=94.46),
           "train_ac": dict(val_l1_model_1step=0.5123, val_l1_copy_last_1step=0.6404, val_l1_shuffled_actions_1step=0.6,
                            val_l1_model_rollout=0.7, val_l1_copy_last_rollout=0.65, rollout_horizon=2,
                            init_val_l1_model_1step=0.6404, init_val_l1_model_rollout=0.65),
           "eval_energy": dict(argmin_within_one_cell=0.55, chance_within_one_cell=0.2, pairs=100),
           "robot_session": dict(planner="fast", success_rate=1.0, mean_final_distance_cm=1.34, seconds_per_action=0.5,
                                 planners={"fast": planner("fast"), "paper": planner("paper")}, **session("reach", EPISODES)),
           "robot_session_grasp": dict(planner="fast", success_rate=0.2, mean_final_distance_cm=1.06, seconds_per_action=0.1, **session("grasp", GRASP))}

# how the summary states each of summary.json's figures, for the results above
STATED = {"minutes": "took 41.5 minutes", "episodes": "300 simulated episodes",
          "val_l1_model_1step": "latent L1 is 0.5123", "val_l1_copy_last_1step": "copying the last frame's 0.6404",
          "model_below_copy_last_1step": "20.0% below copying the last frame", "val_l1_shuffled_actions_1step": "(0.6 against 0.5123",
          "val_l1_model_rollout": "its latent L1 is 0.7", "val_l1_copy_last_rollout": "the last frame's 0.65: no better than the baseline",
          "rollout_horizon": "rollout over 2 steps", "pretrain_first_loss": "from 0.9", "pretrain_final_loss": "to 0.4",
          "probe_acc_pretrained": "the pretrained encoder's probe (92.45%) and the random-init encoder's (93.23%) differ by less "
                                  "than sampling noise", "probe_val_examples": "on 384 held-out clips",
          "probe_acc_random": "(93.23%)", "argmin_within_one_cell": "within one cell of the true action in 55%",
          "chance_within_one_cell": "a random guess: 20%", "energy_pairs": "on 100 held-out pairs",
          "reach_success_rate": "fast planner (the headline planner): 5/5 episodes succeeded (100%",
          "reach_mean_final_distance_cm": "1.3 cm on average", "reach_seconds_per_action": "0.5 s per action",
          "success_rate_reach": "Reach, every planner: fast 5/5 (100%, 95% interval 57 to 100%)",
          "mean_final_distance_cm_reach": "1.3 cm from the scripted end on average; paper 4/5 (80%",
          "success_rate_grasp": "Grasp, every planner: fast 1/5 (20%, 95% interval 4 to 62%)",
          "mean_final_distance_cm_grasp": "1.1 cm from the scripted end on average; on the same seeds the scripted oracle 5/5, "
                                          "random actions 0/5, the still arm 0/5."}


class Page(HTMLParser):
    "The text of the #summary section, of every figcaption and h2, and every src attribute."
    def __init__(self, text: str):
        super().__init__()
        self.summary, self.captions, self.headings, self.sources, self._open = "", [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if attrs.get("id") == "summary" or tag in ("figcaption", "h2"):
            self._open.append(tag)
            if tag == "figcaption":
                self.captions.append("")
            if tag == "h2":
                self.headings.append("")

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if "section" in self._open:
            self.summary += data
        if self._open and self._open[-1] == "figcaption":
            self.captions[-1] += data
        if self._open and self._open[-1] == "h2":
            self.headings[-1] += data


@pytest.fixture
def run(tmp_path):
    "A run folder as the pipeline leaves it: the stages' summaries, their training curves, the session's table and videos."
    for stage, summary in RESULTS.items():
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "summary.json").write_text(json.dumps(summary))
    for stage in ("pretrain", "train_ac"):
        pd.DataFrame(dict(step=[0, 1, 2], loss=[0.9, 0.6, 0.4])).to_parquet(tmp_path / stage / "metrics.parquet")
    pd.concat([EPISODES, references("reach")]).to_csv(tmp_path / "robot_session" / "episodes.csv", index=False)
    pd.concat([GRASP, references("grasp")]).to_csv(tmp_path / "robot_session_grasp" / "episodes.csv", index=False)
    write_video(tmp_path / "robot_session_grasp" / "episode_000.mp4", np.zeros((3, 32, 64, 3), np.uint8))
    for row in EPISODES.itertuples():
        clip = np.full((3, 32, 64, 3), 40 * row.episode, np.uint8)
        write_video(tmp_path / "robot_session" / f"episode_{row.episode:03d}{'' if row.planner == 'fast' else '_paper'}.mp4", clip)
    (tmp_path / "eval_energy" / "landscape_slices.html").write_text("<html><body><div id='landscape'>a landscape</div></body></html>")
    (tmp_path / "config.json").write_text(json.dumps({"robot_session": {"planner": "fast", "compare": ["paper"]}}))
    return tmp_path


def test_summary_states_every_figure(run):
    summary = write_run_report(run, RESULTS, minutes=41.5)
    on_disk = json.loads((run / "summary.json").read_text())
    numeric = {k for k, v in on_disk.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric <= set(STATED) | {"run"}, f"summary.json figures the test does not know how the summary states: {numeric - set(STATED)}"
    page = Page((run / "report.html").read_text())
    for key, text in STATED.items():
        assert text in page.summary, f"{key}: {text!r} not in the summary:\n{page.summary}"
    assert on_disk["findings"] == summary["findings"] and all(f in page.summary for f in summary["findings"])


def test_success_is_told_per_planner(run):
    write_run_report(run, RESULTS, minutes=41.5)
    page = Page((run / "report.html").read_text())
    assert "Reach on held-out seeds: fast 5/5 (100%), paper 4/5 (80%)" in page.headings
    assert "paper planner: 4/5 episodes succeeded (80%" in page.summary and "23.8 cm at worst" in page.summary
    assert "fast ran 5 held-out seeds, paper the first 5; success: final distance under 4 cm." in (run / "report.html").read_text()
    by = json.loads((run / "summary.json").read_text())["reach_by_planner"]
    assert list(by) == ["fast", "paper"] and by["paper"]["worst_final_distance_cm"] == 23.8 and by["paper"]["successes"] == 4


def test_every_video_is_captioned(run):
    write_run_report(run, RESULTS, minutes=41.5)
    text = (run / "report.html").read_text()
    page = Page(text)
    expected = [f"reach, seed {r.seed}, {r.planner} planner: {'success' if r.success else 'failure'}, final distance {r.final_distance_cm:.1f} cm"
                for r in EPISODES.itertuples()] + ["grasp, seed 1000, fast planner: success, final distance 0.6 cm"]   # the grasp session's one video
    assert page.captions == expected
    assert text.count("<span>camera</span><span>goal</span>") == len(EPISODES) + 1
    videos = [s for s in page.sources if s.endswith(".mp4")]
    assert len(videos) == len(EPISODES) + 1 and all((run / s).exists() for s in videos)      # linked, beside the report
    assert "robot_session_grasp/episode_000.mp4" in videos


def test_self_contained_report_embeds_its_videos(run):
    write_run_report(run, RESULTS, minutes=41.5, self_contained=True)
    text = (run / "report.html").read_text()
    page = Page(text)
    assert ".mp4" not in text and all(s.startswith("data:") for s in page.sources), [s[:60] for s in page.sources]
    embedded = [s for s in page.sources if s.startswith("data:video/mp4;base64,")]
    assert len(embedded) == len(EPISODES) + 1
    assert base64.b64decode(embedded[0].split(",", 1)[1]) == (run / "robot_session" / "episode_000.mp4").read_bytes()
    assert "src='eval_energy/" not in text and "srcdoc=" in text and "a landscape" in text     # the landscape inside it too


def test_every_task_has_its_success_table_beside_the_references(run):
    write_run_report(run, RESULTS, minutes=41.5)
    text = (run / "report.html").read_text()
    assert "Every task: success on held-out seeds, beside the references on the same seeds" in Page(text).headings
    section = text[text.index("id='tasks'"):]
    rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", section[:section.index("</table>")])]
    table = pd.DataFrame(rows[1:], columns=rows[0])
    grasp = table[table.Task == "grasp"].set_index("Planner or reference")
    assert list(grasp.index) == ["fast", "the scripted oracle", "random actions", "the still arm"]
    assert grasp.loc["fast", "Successes / episodes"] == "1/5" and grasp.loc["fast", "95% interval (%)"] == "4 to 62"
    assert grasp.loc["the scripted oracle", "Successes / episodes"] == "5/5"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["success_rate_grasp"] == 0.2 and [r["planner"] for r in summary["success_by_task"]["reach"]] == ["fast", "paper", "oracle", "random", "still"]
