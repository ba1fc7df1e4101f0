"""tools/eval_policy.py on a real (untrained) tiny export in the simulator, and agents/plots.py on
real TensorBoard event files."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlarft.agents import plots
from vlarft.agents.config import config_to_json, get_config
from vlarft.agents.export import export_policy
from vlarft.agents.networks import ConsistencyHead, VLABackbone, tokenize
from vlarft.agents.observation import StateNormalizer
from vlarft.tools import eval_policy

REPO = Path(__file__).resolve().parents[1]
CAMERAS, SIZE, STATE_DIM, ACTION_DIM = ("front", "wrist"), (32, 32), 19, 7
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_scalars(logdir, points: dict[str, list[tuple[int, float]]]) -> None:
    """Writes scalars with tf.summary, as training does (one writer = one event file)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for tag, values in points.items():
            for step, value in values:
                tf.summary.scalar(tag, value, step=step)
    writer.close()


def tiny_export(workdir: Path) -> Path:
    """An untrained tiny policy (random weights) exported like a training stage does."""
    config = get_config("tiny")
    window = config.backbone.window
    images = {c: jnp.zeros((1, window, *SIZE, 3), jnp.uint8) for c in CAMERAS}
    states, mask = jnp.zeros((1, window, STATE_DIM)), jnp.ones((1, window), bool)
    text_ids, text_mask = tokenize(["pick up the red cube"], config.backbone.max_text_tokens, config.backbone.vocab_size)
    backbone = VLABackbone(config.backbone, CAMERAS, STATE_DIM)
    k_backbone, k_head = jax.random.split(jax.random.PRNGKey(0))
    backbone_params = backbone.init(k_backbone, images, states, text_ids, text_mask, mask)["params"]
    embedding = backbone.apply({"params": backbone_params}, images, states, text_ids, text_mask, mask)
    head_params = ConsistencyHead(config.head, ACTION_DIM).init(
        k_head, jnp.zeros((1, ACTION_DIM)), config.head.sigma_max, embedding, states[:, -1])["params"]
    meta = {"stage": "sft", "config": config_to_json(config), "task": "pick_cube",
            "spec": {"cameras": {c: list(SIZE) for c in CAMERAS}, "state_dim": STATE_DIM, "action_dim": ACTION_DIM},
            "normalizer": StateNormalizer.identity(STATE_DIM).to_json(), "instruction": "pick up the red cube",
            "cameras": list(CAMERAS), "state_dim": STATE_DIM, "action_dim": ACTION_DIM, "learner_step": 0}
    return export_policy(workdir, backbone_params, head_params, meta)


def assert_png(path) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def test_cli_evaluates_an_export(tmp_path):
    workdir = tmp_path / "run"
    tiny_export(workdir)
    write_scalars(workdir / "tensorboard", {"eval/success_rate": [(10, 0.0), (20, 0.5)],
                                            "eval/mean_episode_length": [(10, 100.0), (20, 60.0)]})
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "tools" / "eval_policy.py"), f"--policy={workdir}", "--episodes=2",
           f"--out={out}", "--all_videos", "--report", "--no_progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["env"] == "sim:pick_cube"
    assert len(result["lengths"]) == len(result["successes"]) == 2 and result["seeds"] == [10_000, 10_001]
    assert result["success_rate"] == sum(result["successes"]) / 2
    assert result["mean_episode_length"] == pytest.approx(np.mean(result["lengths"]))
    assert result["intervention_rate"] == 0.0 and result["deterministic"] and result["sampler_steps"] == 1
    pauses = result["control_pauses"]  # one per env step: its observation (or reset) -> the next action
    assert pauses["pauses"] == sum(result["lengths"]) and 0 < pauses["median_ms"] <= pauses["max_ms"]
    assert result["videos"] == [str(out / "episode_000.mp4"), str(out / "episode_001.mp4")]
    for video in result["videos"]:
        assert Path(video).stat().st_size > 0
    assert_png(result["chart"])
    assert sorted(Path(p).name for p in result["report"]) == sorted(
        f"{m}_vs_{x}.png" for m in ("success_rate", "episode_length") for x in ("steps", "minutes"))
    for png in result["report"]:
        assert_png(png)
    assert json.loads((out / "eval.json").read_text()) == result
    assert "success rate" in proc.stdout  # the table


def test_cli_names_the_path_without_an_export(tmp_path, capsys):
    assert eval_policy.main([f"--policy={tmp_path}", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no exported policy" in err


def test_read_scalars_round_trips_tf_summary_values(tmp_path):
    first = {"eval/success_rate": [(100, 0.1), (200, 0.35)], "train/loss": [(i, 1.0 / (i + 1)) for i in range(5)]}
    write_scalars(tmp_path / "tensorboard", first)
    write_scalars(tmp_path / "tensorboard", {"eval/success_rate": [(200, 0.4), (300, 0.9)]})  # resumed run
    scalars = plots.read_scalars(tmp_path)
    assert set(scalars) == {"eval/success_rate", "train/loss"}
    f32 = lambda v: float(np.float32(v))  # tf.summary.scalar stores float32
    assert [(s, v) for s, _, v in scalars["train/loss"]] == [(s, f32(v)) for s, v in first["train/loss"]]
    assert [(s, v) for s, _, v in scalars["eval/success_rate"]] == [(100, f32(0.1)), (200, f32(0.4)), (300, f32(0.9))]
    walls = [w for _, w, _ in scalars["eval/success_rate"]]
    assert walls == sorted(walls) and walls[0] > 1e9


def test_read_scalars_without_events_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        plots.read_scalars(tmp_path)


def test_plot_curves_and_episode_lengths_write_pngs(tmp_path):
    path = plots.plot_curves({"a": [(0, 0.0), (1, 0.5)], "b": [(0, 1.0), (2, 0.2)]}, tmp_path / "c.png",
                             "title", "x", "y")
    assert_png(path)
    assert_png(plots.plot_episode_lengths([20, 100, 35], [True, False, True], tmp_path / "lengths.png"))


def test_training_report_draws_every_logged_metric_twice(tmp_path):
    write_scalars(tmp_path / "tensorboard", {"eval/success_rate": [(10, 0.2), (20, 0.6)],
                                             "eval/mean_episode_length": [(10, 80.0), (20, 40.0)],
                                             "train/intervention_rate": [(5, 0.5), (15, 0.25)],
                                             "online/intervention_rate": [(300, 1.0), (700, 0.0)],  # env steps
                                             "train/bc_loss": [(5, 1.0)]})
    paths = plots.training_report(tmp_path, tmp_path / "report")
    expected = [f"{m}_vs_{x}.png" for m in ("success_rate", "episode_length", "intervention_rate")
                for x in ("steps", "minutes")]
    assert [Path(p).name for p in paths] == expected
    for path in paths:
        assert_png(path)
