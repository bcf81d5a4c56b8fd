"""Job notebooks run end to end under papermill, with tiny parameters, and refuse bad ones."""
import json
import time

import numpy as np
import pandas as pd
import papermill as pm
import pytest

from conftest import ROOT


def run(nb, tmp_path, **params):
    return pm.execute_notebook(ROOT / "nbs" / nb, tmp_path / "out.ipynb", parameters=params, cwd=ROOT / "nbs",
                               kernel_name="python3", progress_bar=False, execution_timeout=1800)


def test_bench_models_writes_summary(tmp_path):
    out = tmp_path / "bench"
    run("bench_models.ipynb", tmp_path, model_size="tiny", frames=2, img_size=64, repeats=2,
        compile=False, compile_hf=False, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("cpu_fp32_ours_eager_s", "cpu_fp32_hf_eager_s", "cpu_fp32_speedup_vs_hf_eager", "tokens"):
        assert key in summary, key
    assert summary["cpu_fp32_max_abs_diff_ours_eager"] < 1e-4        # the two models agree before they are timed
    assert summary["cpu_fp32_speedup_vs_hf_eager"] == pytest.approx(
        summary["cpu_fp32_hf_eager_s"] / summary["cpu_fp32_ours_eager_s"])
    assert json.loads((out / "config.json").read_text())["model_size"] == "tiny"
    assert (out / "timings.html").exists()


@pytest.mark.parametrize("bad, message", [(dict(frames=3), "parameter frames=3 is invalid"),
                                          (dict(model_size="enormous"), "parameter model_size='enormous' is invalid"),
                                          (dict(repeats="5"), "parameter repeats must be int")])
def test_bench_models_refuses_bad_parameters(tmp_path, bad, message):
    with pytest.raises(pm.PapermillExecutionError, match=message):
        run("bench_models.ipynb", tmp_path, output_dir=str(tmp_path / "never"), **bad)
    assert not (tmp_path / "never").exists()


def test_explore_masks_notebook_runs(tmp_path):
    nb = run("explore_masks.ipynb", tmp_path)
    html = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {}) or "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert html, "the panel displayed nothing"


def test_bench_sim_writes_summary(tmp_path):
    out = tmp_path / "sim"
    run("bench_sim.ipynb", tmp_path, steps=5, size=64, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_per_s"] > 0 and summary["render_fps"] > 0 and summary["bit_exact_replay"] is True


def test_collect_sim_then_load_as_clips(tmp_path):
    from vjepa2wb.episodes import RobotClips, collate_robot
    out = tmp_path / "sim"
    run("collect_sim.ipynb", tmp_path, episodes=2, size=64, view="task", output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["frames"] > 0
    run("collect_sim.ipynb", tmp_path, episodes=3, size=64, view="task", output_dir=str(out))      # resumes
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 2
    with pytest.raises(pm.PapermillExecutionError, match="would mix two cameras"):
        run("collect_sim.ipynb", tmp_path, episodes=4, size=64, output_dir=str(out))   # the room view, into the task view's folder
    for layout in ("droid", "lerobot"):
        ds = RobotClips(out / layout, frames=4, fps=4.0)
        assert len(ds) == 3
        batch = collate_robot([ds[i] for i in range(len(ds))])
        assert batch["video"].shape[1:] == (4, 64, 64, 3) and batch["actions"].shape[1:] == (3, 7)
    with pytest.raises(pm.PapermillExecutionError, match="parameter episodes=0 is invalid"):
        run("collect_sim.ipynb", tmp_path, episodes=0, output_dir=str(tmp_path / "never"))


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_explore_dataset_notebook_runs(tmp_path):
    nb = run("explore_dataset.ipynb", tmp_path)
    assert "episodes in" in _printed(nb) and "first episode: " in _printed(nb)


def test_explorers_say_when_the_model_is_untrained(tmp_path):
    """On a fresh clone explore_rollouts runs (the fixture model, a few sim episodes recorded for it) and, like
    explore_energy, puts a banner at the top that names the model, loudly when it is untrained."""
    def banner(nb) -> str:
        return "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []) if "data" in o)
    nb = run("explore_rollouts.ipynb", tmp_path)
    assert "episodes from" in _printed(nb)
    text, untrained = banner(nb), "fixture model" in _printed(nb)
    assert ("This is an untrained model" in text) == untrained and (untrained or "world model: " in text)
    assert "This is an untrained model" in banner(run("explore_energy.ipynb", tmp_path, source="official", nsamples=3))


def test_explore_dataset_opens_a_lerobot_v3_set(tmp_path):
    "A LeRobot v3.0 set given as `roots` opens with its camera, on the recording's clock; a misspelled -p stops it."
    import numpy as np
    from vjepa2wb.episodes import Episode, write_lerobot
    for seed in range(2):
        write_lerobot(Episode(np.zeros((6, 32, 32, 3), np.uint8), np.zeros((6, 7)), np.zeros((6, 7)), 4.0, {"seed": seed}),
                      tmp_path / "v3", task="reach", version="v3.0")
    printed = _printed(run("explore_dataset.ipynb", tmp_path, roots=str(tmp_path / "v3")))
    assert "2 episodes in 1 datasets" in printed and "first episode: 6 frames over 1.25 s" in printed, printed
    with pytest.raises(pm.PapermillExecutionError, match="unknown job parameter root"):
        run("explore_dataset.ipynb", tmp_path, root=str(tmp_path / "v3"))


def test_pipeline_end_to_end_tiny(tmp_path):
    """make run's pipeline on tiny settings: every stage runs, the report and the summary are written."""
    params = tmp_path / "tiny.yaml"
    params.write_text("collect_sim: {episodes: 4, size: 64}\n"
                      "pretrain: {encoder: {depth: 2}, predictor: {pred_depth: 1}, frames: 4, steps: 4, batch_size: 4, checkpoint_every: 4, probe: false}\n"
                      "train_ac: {frames: 4, predictor: {pred_depth: 1}, steps: 6, batch_size: 4, checkpoint_every: 6}\n"
                      "eval_energy: {episodes: 1, pairs: 3}\n"
                      "robot_session: {episodes: 1, max_steps: 2, planner: {samples: 8, iterations: 1, topk: 2}, compare: []}\n"
                      "robot_session_grasp: {episodes: 1, max_steps: 2, planner: {samples: 8, iterations: 1, topk: 2}}\n")
    out = tmp_path / "run"
    run("pipeline.ipynb", tmp_path, run_id="test", params_file=str(params), output_root=str(out))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("val_l1_model_1step", "val_l1_copy_last_1step", "val_l1_shuffled_actions_1step", "model_below_copy_last_1step"):
        assert key in summary, key
    assert (out / "report.html").stat().st_size > 10_000
    # seed 1000, each task: the oracle succeeds, the still arm does not, and the rates are the episodes' own
    for task, stage in (("reach", "robot_session"), ("grasp", "robot_session_grasp")):
        episodes = pd.read_csv(out / stage / "episodes.csv").set_index("planner")
        assert list(episodes.index) == ["custom", "oracle", "random", "still"] and set(episodes.seed) == {1000}, episodes
        assert episodes.loc["oracle", "success"] and not episodes.loc["still", "success"], episodes
        assert summary[f"success_rate_{task}"] == float(episodes.loc["custom", "success"])
        assert summary[f"mean_final_distance_cm_{task}"] == pytest.approx(episodes.loc["custom", "final_distance_cm"])
        assert [r["planner"] for r in summary["success_by_task"][task]] == ["custom", "oracle", "random", "still"]
    assert summary["reach_success_rate"] == summary["success_rate_reach"]
    # each failure of the tiny model's grasp has a cause, from its energies (a success needs none)
    grasp = json.loads((out / "robot_session_grasp" / "summary.json").read_text())
    failed = int((~pd.read_csv(out / "robot_session_grasp" / "episodes.csv").query("planner == 'custom'").success).sum())
    assert sum(grasp["failure_causes"].values()) == failed and set(grasp["failure_causes"]) <= {"model", "barrier", "search"}
    assert not failed or (out / "robot_session_grasp" / "failure_causes.csv").exists()
    assert summary.get("failure_causes_by_task", {}).get("grasp", {}) == grasp["failure_causes"]
    # and whether it predicts the grasp, per seed, in the run's summary too
    response = pd.read_csv(out / "robot_session_grasp" / "gripper_response.csv")
    assert list(response.seed) == [1000] and grasp["gripper_close_lowest_share"] == response.close_lowest.mean()
    assert summary["gripper_close_lowest_share_grasp"] == grasp["gripper_close_lowest_share"]
    for stage in ("collect_sim", "pretrain", "train_ac", "eval_energy", "robot_session", "robot_session_grasp"):
        assert (out / f"{stage}.ipynb").exists() and (out / stage / "summary.json").exists()
    # the rollout explorer runs on that model
    ckpt = json.loads((out / "train_ac" / "summary.json").read_text())["checkpoint"]
    nb = run("explore_rollouts.ipynb", tmp_path, checkpoint=ckpt)        # the run's episodes: collected, then planned by each session
    roots = [str(out / "collect_sim" / "lerobot"), str(out / "robot_session" / "episodes"), str(out / "robot_session_grasp" / "episodes")]
    assert f"6 episodes from {roots}; model: {ckpt}" in _printed(nb), _printed(nb)
    # run again into the same folder: collect_sim resumes, every other stage's first output is kept apart
    first_steps = (out / "robot_session" / "steps.jsonl").read_text()
    run("pipeline.ipynb", tmp_path, run_id="test", params_file=str(params), output_root=str(out))
    kept = {p.name.rsplit("-", 2)[0]: p for p in (out / "previous").iterdir()}
    assert set(kept) == {"pretrain", "train_ac", "eval_energy", "robot_session", "robot_session_grasp"}
    assert (kept["robot_session"] / "steps.jsonl").read_text() == first_steps
    again = (out / "robot_session" / "steps.jsonl").read_text().splitlines()
    assert len(again) == len(first_steps.splitlines()) and all(json.loads(l)["step"] < 2 for l in again)   # a fresh log


def test_pipeline_refuses_unknown_stage_parameters(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_ac: {stepz: 10}\n")
    with pytest.raises(pm.PapermillExecutionError, match=r"train_ac must map its parameters to values; unknown: \['stepz'\]"):
        run("pipeline.ipynb", tmp_path, run_id="bad", params_file=str(bad), output_root=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_train_ac_refuses_bad_parameters(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="parameter data"):
        run("train_ac.ipynb", tmp_path, data=str(tmp_path / "missing"))
    with pytest.raises(pm.PapermillExecutionError, match="parameter frames=1 is invalid"):
        run("train_ac.ipynb", tmp_path, data=str(tmp_path), frames=1)


def test_robot_session_records_every_step(tmp_path, fix, hp):
    from vjepa2wb import load_checkpoint, save_checkpoint
    ckpt = save_checkpoint(load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"]),
                           tmp_path / "ac_model")
    out = tmp_path / "session"
    run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), task="reach", episodes=2, max_steps=3,
        planner={"samples": 16, "iterations": 2, "topk": 4, "tol": 0.0}, compare=["fast"], compare_episodes=1,
        size=hp["encoder"]["img_size"], view="task", output_dir=str(out))
    steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 9 and {s["planner"] for s in steps} == {"custom", "fast"}
    assert {s["episode"] for s in steps if s["planner"] == "custom"} == {0, 1} and {s["episode"] for s in steps if s["planner"] == "fast"} == {0}
    assert all(s["flops"] > 0 for s in steps) and {s["iterations"] for s in steps if s["planner"] == "custom"} == {2}
    assert len(list((out / "frames").glob("*.npy"))) == 9 and len(list(out.glob("episode_*.mp4"))) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert {"success_rate", "mean_final_distance_cm", "seconds_per_action"} <= set(summary["reach"])
    assert set(summary["planners"]) == {"custom", "fast"} and summary["planners"]["fast"]["gflop_per_action"] > 0
    assert summary["planners"]["custom"]["episodes"] == 2 and summary["planners"]["fast"]["episodes"] == 1
    assert (out / "episodes.csv").exists()
    from vjepa2wb.episodes import find_episodes
    assert len(find_episodes(out / "episodes")) == 3                 # every episode is training data too
    from vjepa2wb.arm import VIEWS
    from vjepa2wb.episodes import read_episode
    seen = read_episode("droid", str(next((out / "episodes" / "droid").iterdir())), 0).extrinsics
    np.testing.assert_allclose(seen[:, :3], np.broadcast_to(VIEWS["task"]["camera_pos"], (len(seen), 3)))   # the view asked for
    with pytest.raises(pm.PapermillExecutionError, match="reads the simulated arm's internals; on franka://127.0.0.1 use task='captured'"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), arm="franka://127.0.0.1", output_dir=str(tmp_path / "never"))
    with pytest.raises(pm.PapermillExecutionError, match="parameter task='juggle' is invalid"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), task="juggle", output_dir=str(tmp_path / "never"))
    with pytest.raises(pm.PapermillExecutionError, match="parameter compare_episodes=0 is invalid"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), episodes=2, compare_episodes=0, output_dir=str(tmp_path / "never"))


def test_robot_session_on_a_remote_arm_towards_a_captured_goal(tmp_path, fix, hp, monkeypatch):
    """Any arm by URI: an `ArmServer` (here over the sim) on loopback, a goal captured through it, then the session job
    with arm=remote://..., task=captured: it plans, records, and judges success from the recorded pose."""
    from vjepa2wb import load_checkpoint, save_checkpoint
    from vjepa2wb.arm import SimArm
    from vjepa2wb.remote import ArmServer, RemoteArm
    from vjepa2wb.tasks import capture_goal, save_goal
    ckpt = save_checkpoint(load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"]),
                           tmp_path / "ac_model")
    token = "session-token-1"
    monkeypatch.setenv("VJEPA2WB_ARM_TOKEN", token)
    size = hp["encoder"]["img_size"]
    with SimArm(width=size, height=size) as sim:
        server = ArmServer(sim, token, max_rate_hz=50, heartbeat_timeout=5.0).start()
        try:
            with RemoteArm("127.0.0.1", server.port) as remote:
                goal = save_goal(capture_goal(remote, moves=[[0.02, 0, 0, 0, 0, 0, 0]], seed=4), tmp_path / "goal.npz")
            time.sleep(0.2)
            out = tmp_path / "session"
            run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), arm=f"remote://127.0.0.1:{server.port}", task="captured",
                goal=str(goal), episodes=1, max_steps=2, planner={"samples": 8, "iterations": 1, "topk": 2}, output_dir=str(out))
        finally:
            server.stop()
    rows = pd.read_csv(out / "episodes.csv")
    assert rows.task.tolist() == ["captured"] and rows.steps.tolist() == [2]
    assert server.steps_taken == 2 + 1                       # the capture's one step, the session's two
    assert json.loads((out / "summary.json").read_text())["captured"]["episodes"] == 1


def test_bench_planning_writes_summary(tmp_path):
    """The planning benchmark on tiny settings: the contracted keys, and both paths agree."""
    out = tmp_path / "bench"
    run("bench_planning.ipynb", tmp_path, models=["fixture", "default"], samples=16, iterations=2, output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    for key in ("efficiency", "seconds_per_action_fast", "seconds_per_action_reference", "speedup_vs_reference", "max_energy_diff"):
        assert isinstance(summary[key], float) and summary[key] >= 0, key
    assert summary["max_energy_diff"] < 1e-5 and set(summary["models"]) == {"fixture", "default"}
    assert all(m["same_choice"] and 0 < m["efficiency"] < 1.5 for m in summary["models"].values())
    for m in summary["models"].values():                  # where the time goes, on a CPU
        shares = [m[f"time_share_{k}"] for k in ("matmul", "attention", "other")]
        assert all(0 < x < 1 for x in shares) and abs(sum(shares) - 1) < 1e-9 and 0 < m["matmul_efficiency"] < 1.5
    with pytest.raises(pm.PapermillExecutionError, match="parameter models"):
        run("bench_planning.ipynb", tmp_path, models=["huge"], output_dir=str(tmp_path / "never"))


def test_explore_energy_runs_on_every_source(tmp_path, fix, hp):
    from vjepa2wb import load_checkpoint, save_checkpoint
    ckpt = save_checkpoint(load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"]),
                           tmp_path / "ac_model")
    for source, extra in (("official", {}), ("sim", dict(checkpoint=str(ckpt), size=hp["encoder"]["img_size"]))):
        nb = run("explore_energy.ipynb", tmp_path, source=source, nsamples=3, **extra)
        assert any("cells from the true action" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    with pytest.raises(pm.PapermillExecutionError, match="parameter source"):
        run("explore_energy.ipynb", tmp_path, source="dream")


def _droid_episodes(root, n, T=12, size=32):
    "`n` tiny DROID episodes under `root` (a brightness ramp, a random walk of states), as nbs/15_episodes builds them."
    import numpy as np
    from vjepa2wb.episodes import Episode, write_droid
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        frames = np.repeat(np.linspace(0, 255, T, dtype=np.uint8)[:, None, None, None], size * size * 3).reshape(T, size, size, 3)
        states = np.cumsum(rng.normal(0, 0.01, (T, 7)), 0) + [0.5, 0, 0.3, 3.1, 0, 0, 0.5]
        paths.append(write_droid(Episode(frames, states, np.zeros((T, 7)), 4.0), root, f"ep_{i:03d}"))
    return paths


def _strict_json(path):
    def refuse(c):
        raise ValueError(f"{path} holds {c}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_train_ac_summary_counts_what_it_skipped(tmp_path):
    """9 episodes, 7 with a corrupt video: the job trains on the 2 readable ones (one held out) and summary.json,
    strict JSON, counts the readable, skipped and held-out episodes, with each reason."""
    from vjepa2wb.episodes import CAMERA
    paths = _droid_episodes(tmp_path / "droid", 9)
    for p in paths[2:]:
        (p / "recordings" / "MP4" / f"{CAMERA}.mp4").write_bytes(b"garbage")
    out = tmp_path / "run"
    run("train_ac.ipynb", tmp_path, data=str(tmp_path / "droid"), crop=32, frames=4, predictor={"pred_depth": 1}, steps=2,
        batch_size=2, checkpoint_every=2, cache_dir=str(tmp_path / "cache"), output_dir=str(out))
    summary = _strict_json(out / "summary.json")
    assert (summary["episodes_found"], summary["episodes_readable"], summary["episodes_skipped"]) == (9, 2, 7)
    assert (summary["train_episodes"], summary["val_episodes"]) == (1, 1)
    assert sorted(summary["skipped_episodes"]) == [str(p) for p in paths[2:]]
    assert all(r.startswith("unreadable: ") for r in summary["skipped_episodes"].values())
    assert summary["nonfinite_steps"] == 0 and summary["steps"] == 2
    for key in ("val_l1_model_1step", "val_l1_copy_last_1step", "final_loss", "checkpoint", "model_vs_copy_last_1step",
                "shuffled_vs_true_actions_1step", "train_seconds", "encoder"):
        assert key in summary, key                                   # the contract's keys stay


def test_pretrain_summary_counts_skipped_steps(tmp_path):
    """Pretraining on two DROID episodes, one with a corrupt video, one clip a step: the steps with no clip log no loss
    and are counted, final_loss averages only real losses, and the skipped episode's reason is in summary.json."""
    from vjepa2wb.episodes import CAMERA
    bad, _ = _droid_episodes(tmp_path / "droid", 2)
    (bad / "recordings" / "MP4" / f"{CAMERA}.mp4").write_bytes(b"garbage")
    out = tmp_path / "run"
    run("pretrain.ipynb", tmp_path, data=str(tmp_path / "droid"), crop=32, frames=4, encoder={"depth": 1}, steps=4,
        batch_size=1, checkpoint_every=4, probe=False, output_dir=str(out))
    summary = _strict_json(out / "summary.json")
    assert (summary["skipped_steps"], summary["skipped_clips"], summary["nonfinite_steps"]) == (2, 2, 0)
    assert list(summary["skipped_samples"]) == [str(bad)] and summary["skipped_samples"][str(bad)].startswith("unreadable: ")
    metrics = pd.read_parquet(out / "metrics.parquet")
    real = metrics.loss[metrics.status == "stepped"]
    assert len(real) == 2 and summary["final_loss"] == pytest.approx(real.mean()) and metrics.loss.isna().sum() == 2


def test_explore_probe_shows_a_probe_run_and_an_anticipation_run(tmp_path):
    """The explorer reads the two jobs' outputs (tiny runs here) and shows both panels."""
    probe, antic = tmp_path / "probe", tmp_path / "anticipate"
    run("probe.ipynb", tmp_path, encoder="fixture", n_train=16, n_val=8, frames=4, epochs=1, depth=1, clips=1, views=1,
        output_dir=str(probe))
    run("anticipate.ipynb", tmp_path, n_train=72, n_val=72, epochs=1, depth=1, output_dir=str(antic))
    nb = run("explore_probe.ipynb", tmp_path, probe_run=str(probe), anticipate_run=str(antic))
    widgets = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 2, "expected the classification and the anticipation panels"
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"probe run {probe}" in text


@pytest.mark.parametrize("name", sorted(f.name for f in (ROOT / "nbs" / "params").glob("*.yaml")))
def test_every_params_file_names_real_stages_and_parameters(name):
    """What the pipeline checks before it starts, for the shipped parameter files: each section a stage (or a session on a
    task), each key a parameter of that stage's notebook; a session section names its own task."""
    import yaml
    from vjepa2wb.tasks import TASKS
    stages = yaml.safe_load((ROOT / "nbs" / "params" / name).read_text())
    known = set(yaml.safe_load((ROOT / "nbs" / "params" / "cpu.yaml").read_text())) | {f"robot_session_{t}" for t in TASKS}
    assert set(stages) <= known, set(stages) - known
    for stage, kw in stages.items():
        notebook = "robot_session" if stage.startswith("robot_session") else stage
        assert set(kw) <= set(pm.inspect_notebook(str(ROOT / "nbs" / f"{notebook}.ipynb"))), (stage, kw)
        if stage.startswith("robot_session_"):
            assert kw.get("task", stage.removeprefix("robot_session_")) == stage.removeprefix("robot_session_"), (stage, kw)


def test_robot_session_plans_through_the_simulator(tmp_path, fix, hp):
    "dynamics='sim': an encoder alone plans, the predicted energy is the seen one, and what needs a trained predictor is refused."
    from dataclasses import replace
    from vjepa2wb import load_checkpoint, save_checkpoint
    wm = load_checkpoint(fix / "ac_checkpoint.pt", encoder=hp["encoder"], ac_predictor=hp["ac_predictor"])
    ckpt = save_checkpoint(replace(wm, ac_predictor=None), tmp_path / "encoder_only")
    out = tmp_path / "session"
    run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), task="grasp", episodes=1, max_steps=2, dynamics="sim",
        planner={"samples": 6, "iterations": 2, "topk": 2, "tol": 0.0}, references=["still"],
        size=hp["encoder"]["img_size"], output_dir=str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dynamics"] == "sim" and json.loads((out / "config.json").read_text())["dynamics"] == "sim"
    assert summary["planners"]["custom"]["gflop_per_action"] > 0 and set(summary["references"]) == {"still"}
    steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(s["iterations"] == 2 for s in steps)
    assert not (out / "gripper_response.csv").exists()            # nothing to ask of a perfect predictor
    causes = pd.read_csv(out / "failure_causes.csv") if (out / "failure_causes.csv").exists() else None
    assert causes is None or (causes.cause != "model").all()      # what it imagines is what it sees
    with pytest.raises(pm.PapermillExecutionError, match="has no AC predictor: train one"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), output_dir=str(tmp_path / "never"))
    with pytest.raises(pm.PapermillExecutionError, match="it needs arm='sim' and a sample search"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), dynamics="sim", planner="gd", output_dir=str(tmp_path / "never"))
    with pytest.raises(pm.PapermillExecutionError, match="parameter dynamics='perfect' is invalid"):
        run("robot_session.ipynb", tmp_path, checkpoint=str(ckpt), dynamics="perfect", output_dir=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
