"""Reward classifier on real simulator frames: record (sim labels) -> train -> held-out figures,
save/load, the env wrapper (thresholds, consecutive steps), damaged files, the held-key labeler."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from vlarft.agents.reward_classifier import (BalancedSampler, RewardClassifierConfig, augment, load_classifier,
                                             save_classifier)
from vlarft.datasets.raw_episodes import RawEpisodeError, list_raw_episodes, write_raw_episode
from vlarft.robot_io.factory import make_env
from vlarft.robot_io.reward import RewardClassifierWrapper
from vlarft.robot_io.teleop import make_device_for
from vlarft.tools.record_success_fail import HeldKeyLabeler, read_labelled_frames, record_frames
from vlarft.tools.train_reward_classifier import binary_metrics, main as train_main

from conftest import SMALL_SPEC, make_episode

SIZE = 32
HOLD = 8


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("frames")
    summary = record_frames("sim:pick_cube", "scripted", 12, str(out), labeler="sim", success_hold=HOLD, seed=100,
                            image_size=SIZE, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def trained(recorded, tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = train_main([f"--data_dir={recorded[0]}", f"--out_dir={out}", "--cameras=front", "--steps=200",
                           "--batch_size=32", "--eval_every=0", "--seed=0", "--no_progress"])
    assert code == 0
    return out, json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_recording_labels_frames_with_the_simulator_success(recorded):
    out, summary = recorded
    files = list_raw_episodes(out)
    assert summary.episodes == len(files) == 12 and summary.success_frames > 12
    total = 0
    for path in files:
        frames = read_labelled_frames(path)
        assert frames.observation["image_front"].shape == (len(frames), SIZE, SIZE, 3)
        assert np.array_equal(frames.success_label, frames.env_success)  # sim labeler
        assert not frames.success_label[0]  # a reset frame is never a success
        if frames.metadata["episode_success"]:
            assert frames.held.sum() == HOLD and frames.held[-HOLD:].all()
            assert frames.success_label[~frames.held][-1]  # the episode ended on its success frame
        total += len(frames)
    assert total == summary.success_frames + summary.failure_frames


def test_training_beats_the_trivial_baseline_on_held_out_episodes(trained):
    out, figures = trained
    assert figures["recall"] > 0.5 and figures["precision"] > figures["positive_rate"]
    assert figures["accuracy"] > 1.0 - figures["positive_rate"]  # better than "never a success"
    assert [row["threshold"] for row in figures["sweep"]] == [0.1, 0.3, 0.5, 0.7, 0.9]
    meta = load_classifier(out).meta
    assert meta["heldout_files"] and not set(meta["heldout_files"]) & set(meta["train_files"])  # split by episode
    assert list((out / "tensorboard").iterdir())


def test_save_load_round_trip_gives_identical_probabilities(trained, tmp_path):
    out, figures = trained
    classifier = load_classifier(out)
    assert classifier.cameras == ("front",) and classifier.config.image_size == (SIZE, SIZE)
    heldout = [read_labelled_frames(p) for p in classifier.meta["heldout_files"]]
    images = {"image_front": np.concatenate([f.observation["image_front"] for f in heldout])}
    labels = np.concatenate([f.success_label for f in heldout])
    probabilities = classifier.predict_proba(images)
    assert binary_metrics(probabilities, labels, 0.5)["tp"] == figures["tp"]  # the saved params are the trained ones
    save_classifier(tmp_path / "copy", classifier.params, classifier.config, classifier.meta)
    again = load_classifier(tmp_path / "copy").predict_proba(images)
    assert np.array_equal(probabilities, again)
    assert np.array_equal(probabilities, classifier.predict_proba(images, chunk=16))  # padded chunks
    single = classifier.predict_proba({"image_front": images["image_front"][3], "state": np.zeros(19)})
    assert isinstance(single, float) and single == pytest.approx(float(probabilities[3]), abs=1e-5)


def test_wrapper_thresholds_on_the_real_simulator(trained):
    env = RewardClassifierWrapper(make_env("sim:pick_cube", image_size=SIZE), classifier_dir=str(trained[0]),
                                  threshold=0.0)
    _, info = env.reset(seed=0)
    assert info["success"] is False and info["env_success"] is False
    _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
    assert (reward, terminated, truncated, info["success"], info["env_success"]) == (1.0, True, False, True, False)
    assert 0.0 <= info["success_probability"] <= 1.0

    never = RewardClassifierWrapper(make_env("sim:pick_cube", image_size=SIZE), classifier_dir=str(trained[0]),
                                    threshold=1.01)
    operator = make_device_for("scripted", never, seed=0)
    never.reset(seed=0)
    operator.reset()
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, info = never.step(operator.poll().action)
        rewards.append(reward)
        assert info["success"] is False
        done = terminated or truncated
    assert sum(rewards) == 0.0 and info["env_success"]  # the sim's own success ended it, unrewarded


class Probabilities:
    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self, observation):
        assert "image_front" in observation
        self.calls += 1
        return self.values.pop(0)


def test_wrapper_counts_consecutive_success_steps():
    stub = Probabilities([0.9, 0.2, 0.5, 0.9, 0.9, 0.1, 0.7, 0.8, 0.95])
    env = RewardClassifierWrapper(make_env("sim:pick_cube", render_images=False, image_size=16),
                                  threshold=0.5, consecutive=3, probability_fn=stub)
    env.reset(seed=0)
    steps = [env.step(np.zeros(7, np.float32)) for _ in range(5)]
    assert [s[1] for s in steps] == [0.0, 0.0, 0.0, 0.0, 1.0]  # 0.5 counts (>=); 0.2 broke the first run
    assert [s[2] for s in steps] == [False] * 4 + [True] and steps[-1][4]["success"]
    env.reset(seed=1)  # a reset clears the streak
    steps = [env.step(np.zeros(7, np.float32)) for _ in range(3)]
    assert [s[1] for s in steps] == [0.0, 0.0, 0.0] and env.streak == 2
    assert env.step(np.zeros(7, np.float32))[1] == 1.0 and stub.calls == 9


def test_wrapper_refuses_bad_arguments(trained):
    env = make_env("sim:pick_cube", render_images=False, image_size=16)
    with pytest.raises(ValueError, match="classifier_dir"):
        RewardClassifierWrapper(env)
    with pytest.raises(ValueError, match="consecutive"):
        RewardClassifierWrapper(env, probability_fn=lambda obs: 1.0, consecutive=0)
    with pytest.raises(ValueError, match="side"):
        RewardClassifierWrapper(env, classifier_dir=str(trained[0]), cameras=["side"])
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        RewardClassifierWrapper(env, classifier_dir=str(trained[0] / "nowhere"))


def test_damaged_files_name_the_file(recorded, trained, tmp_path, capsys):
    source = list_raw_episodes(recorded[0])[0]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    truncated = bad_dir / source.name
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(RawEpisodeError, match=str(truncated)):
        read_labelled_frames(truncated)
    assert train_main([f"--data_dir={bad_dir}", f"--out_dir={tmp_path / 'out'}", "--no_progress"]) == 1
    assert str(truncated) in capsys.readouterr().err

    demo = write_raw_episode(tmp_path / "demo.npz", make_episode(), SMALL_SPEC)  # a demo, not labelled frames
    with pytest.raises(RawEpisodeError, match="not a success/failure frame file"):
        read_labelled_frames(demo)

    broken = tmp_path / "broken"
    shutil.copytree(trained[0], broken)
    document = json.loads((broken / "classifier.json").read_text())
    document["config"]["bottleneck"] = 8
    (broken / "classifier.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="params.msgpack.*bottleneck"):
        load_classifier(broken)


def test_balanced_sampler_and_augmentation():
    labels = np.zeros(100, bool)
    labels[[3, 50]] = True
    sampler = BalancedSampler(labels, batch_size=16, positive_fraction=0.5, seed=0)
    for _ in range(5):
        assert labels[sampler.sample()].sum() == 8
    with pytest.raises(ValueError, match="success and failure frames"):
        BalancedSampler(np.zeros(10, bool), 8)
    import jax

    config = RewardClassifierConfig(cameras=("front",), image_size=(24, 24))
    images = {"image_front": np.full((4, 32, 32, 3), 128, np.uint8), "state": np.zeros((4, 19))}
    out = augment(images, jax.random.PRNGKey(0), config)
    assert set(out) == {"image_front"} and out["image_front"].shape == (4, 24, 24, 3)
    values = np.asarray(out["image_front"])
    assert values.min() >= 0 and values.max() <= 255 and len(np.unique(values[:, 0, 0, 0])) > 1  # per-image jitter


def test_held_key_labeler_windows():
    from vlarft.robot_io.teleop.keyboard import KeyboardTeleop

    keyboard = KeyboardTeleop()
    try:
        with pytest.raises(ValueError, match="gripper"):
            HeldKeyLabeler("space", keyboard)  # the keyboard device's gripper key
        shared = HeldKeyLabeler("left shift", keyboard)
        assert shared.shared and shared({}, {}) is False
    finally:
        keyboard.close()
    own = HeldKeyLabeler("space")
    assert not own.shared and own({}, {}) is False
    with pytest.raises(ValueError, match="not a pygame key"):
        HeldKeyLabeler("no such key")
