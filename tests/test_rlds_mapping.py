"""Any RLDS dataset in through a TOML mapping: generated datasets with the exact feature specs of the
rlds_dataset_builder example layout and of Open X-Embodiment `bridge`, converted by the real Beam
job (DirectRunner) and checked against hand-computed values; the per-episode mapping function on a
hand-made episode; bad mappings and bad episodes named precisely; the output read by the stages'
loaders (reader, statistics, SFT's StepData, Reverb replay)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET
from foreign_rlds import write_bridge_source, write_example_source, two_colour_frames
from vlarft.agents.config import get_config
from vlarft.agents.observation import StateNormalizer
from vlarft.agents.step_data import StepData
from vlarft.datasets import statistics
from vlarft.datasets.mapped_episodes import iterate_mapped_episodes, map_episode, resolve
from vlarft.datasets.rlds_source import (MappingError, SourceDataset, SourceEpisode, open_source,
                                         read_source_episodes)
from vlarft.datasets.reader import dataset_spec, iterate_episodes
from vlarft.datasets.replay import ReplayConfig, ReplayServer, load_rlds_into_table
from vlarft.datasets.replay.tables import transition_signature
from vlarft.datasets.rlds_mapping import MappingConfigError, bundled_mappings, load_mapping, parse_mapping
from vlarft.pipelines import map_rlds as map_rlds_cli
from vlarft.pipelines.map_rlds import MAPPING_INFO, MapRldsConfig, map_rlds
from vlarft.pipelines.rlds_job import ConversionError


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("example_layout")
    source = write_example_source(root / "source")
    result = map_rlds(MapRldsConfig(source=source, mapping="rlds_dataset_builder_example",
                                    output_dir=str(root / "data")), log=QUIET)
    return source, result


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge_layout")
    source = write_bridge_source(root / "source")
    result = map_rlds(MapRldsConfig(source=source, mapping="bridge", output_dir=str(root / "data"),
                                    episodes_per_item=2), log=QUIET)
    return source, result


def assert_two_colours(images, source_frames):
    """Each half of every frame keeps its source colour (JPEG: within a few levels away from the edge)."""
    images, width = images.astype(int), images.shape[2]
    assert np.abs(images[:, :, : width // 2 - 4] - source_frames[:, :1, :1]).max() <= 4
    assert np.abs(images[:, :, width // 2 + 4:] - source_frames[:, :1, -1:]).max() <= 4


def by_id(dataset_dir):
    return {ep["episode_metadata"]["episode_id"]: (split, ep) for split in ("train", "validation")
            for ep in iterate_episodes(dataset_dir, split)}


def test_bundled_mappings_parse():
    assert {"bridge", "rlds_dataset_builder_example"} <= set(bundled_mappings())
    for name in bundled_mappings():
        assert load_mapping(name).name == name


def test_example_layout_converts_to_hand_computed_values(example):
    source, result = example
    assert result.episodes == {"train": 3, "validation": 1} and result.dead_letters == []
    spec = dataset_spec(result.dataset_dir)
    assert spec.cameras == {"front": (64, 64), "wrist": (64, 64)}
    assert (spec.state_dim, spec.action_dim, spec.language_embedding_dim) == (10, 7, 512)
    episodes = by_id(result.dataset_dir)
    assert {eid: split for eid, (split, _) in episodes.items()} == {
        "train-000000": "train", "train-000001": "train", "train-000002": "train", "val-000000": "validation"}

    split, ep = episodes["train-000000"]  # 4 steps, a success
    steps, meta = ep["steps"], ep["episode_metadata"]
    # state: the source's 10 values unchanged (index 0: 10 t + d)
    np.testing.assert_array_equal(steps["observation"]["state"], np.arange(4)[:, None] * 10.0 + np.arange(10))
    # action: joints 0-5 clipped to [-1, 1], gripper from the finger velocity sign (0.3 -> open -1, -0.2 -> +1)
    np.testing.assert_allclose(steps["action"][0], [-1, -1, -5 / 6, -0.5, -1 / 6, 1 / 6, -1], atol=1e-6)
    np.testing.assert_allclose(steps["action"][1], [-1, -1, -5 / 6 * 1.1, -0.55, -1.1 / 6, 1.1 / 6, 1], atol=1e-6)
    np.testing.assert_array_equal(steps["action"][3], np.zeros(7))  # padding of the final observation
    np.testing.assert_array_equal(steps["reward"], [0, 0, 1, 0])  # the source's last-step 1 -> last transition
    np.testing.assert_array_equal(steps["is_terminal"], [False, False, False, True])
    np.testing.assert_array_equal(steps["discount"], [1, 1, 0, 0])
    assert list(steps["language_instruction"]) == ["open the door 0"] * 4
    np.testing.assert_array_equal(steps["language_embedding"], np.zeros((4, 512)))
    assert_two_colours(steps["observation"]["image_front"], two_colour_frames(4, 64, seed=0))  # PNG -> our JPEG
    assert meta["success"] and meta["file_path"] == "/raw/episode_0.npy" and meta["task"] == "example_dataset"

    failed = episodes["train-000001"][1]  # no terminal in the source: no success, no reward, a time-limit end
    assert not failed["episode_metadata"]["success"]
    assert not failed["steps"]["is_terminal"].any() and not failed["steps"]["reward"].any()
    np.testing.assert_array_equal(failed["steps"]["discount"], np.ones(5))

    stats = statistics.load_statistics(result.dataset_dir)
    train = [e for s, e in episodes.values() if s == "train"]
    want = statistics.compute_statistics((e["steps"]["action"], e["steps"]["observation"]["state"]) for e in train)
    assert stats["action"]["mean"] == pytest.approx(want["action"]["mean"])
    assert stats["num_transitions"] == 3 + 4 + 5
    names = json.loads((Path(result.dataset_dir) / MAPPING_INFO).read_text())
    assert names["state_names"][-1] == "door_angle" and names["action_names"][-1] == "gripper"
    assert "[action.gripper]" in names["mapping_toml"]


def test_bridge_layout_resizes_scales_and_dead_letters_bad_episodes(bridge):
    source, result = bridge
    assert result.episodes == {"train": 1, "validation": 1}
    dead = {d["episode_id"]: d for d in result.dead_letters}
    assert set(dead) == {"train-000001", "train-000002"}
    assert dead["train-000001"]["reason"].startswith(
        "dataset 'bridge', episode 'train-000001', field 'steps/language_instruction': empty language instruction")
    assert dead["train-000002"]["reason"] == (
        "dataset 'bridge', episode 'train-000002', step 2, field 'observation/state': non-finite value "
        "(made from the source's steps/observation/state)")
    assert dead["train-000002"]["file"] == f"{source}:train[2]"

    episodes = by_id(result.dataset_dir)
    steps = episodes["train-000000"][1]["steps"]
    raw = open_source(source)
    src = next(read_source_episodes(raw, "train", 0, 1)).steps
    want = np.clip(np.concatenate([src["action"][:, :3] * 20, src["action"][:, 3:6] * 4], 1), -1, 1)
    np.testing.assert_allclose(steps["action"][:-1, :6], want[:-1], rtol=1e-6)
    assert steps["action"][0, 0] == 1.0  # 0.08 m -> 1.6 -> clipped
    np.testing.assert_array_equal(steps["action"][:, 6], [-1, -1, 1, 1, 0])  # 1.0 open; 0.2 -> 0.6 -> closed
    np.testing.assert_array_equal(steps["reward"], [0, 0, 0, 1, 0])  # derived: a successful demo
    assert steps["is_terminal"][-1] and episodes["train-000000"][1]["episode_metadata"]["robot"] == "widowx_250"
    np.testing.assert_allclose(steps["observation"]["state"], src["observation/state"])
    assert steps["observation"]["image_front"].shape == (5, 128, 128, 3)  # 256 -> 128, area resampling
    assert_two_colours(steps["observation"]["image_front"], two_colour_frames(5, 256, seed=0))
    test_episode = episodes["test-000000"]
    assert test_episode[0] == "validation" and test_episode[1]["episode_metadata"]["instruction"] == "wipe the table"


HAND_MAPPING = """
[episode]
id = "metadata:name"
task = "text:stack"
robot = "metadata:robot"
success = "metadata:ok"

[language]
instruction = "text:stack the blocks"

[cameras.top]
key = "cam"
size = [2, 2]
crop = [0, 2, 4, 4]

[[state]]
key = "joints"
slice = [1, 3]
scale = [2.0, 0.5]
offset = 1.0
names = ["a", "b"]

[[state]]
key = "grip"

[[action.parts]]
key = "pose"
index = 0
delta = true
scale = 10.0

[[action.parts]]
key = "pose"
index = 1
delta = true
wrap_angle = true

[action.gripper]
key = "grip"
open = 0.08
closed = 0.0

[reward]
reward = "step:r"
terminal = "step:done"
"""

HAND_LAYOUT = SourceDataset(
    path="/hand", name="hand",
    steps={"cam": ((4, 6, 3), "uint8"), "joints": ((4,), "float32"), "grip": ((), "float32"),
           "pose": ((2,), "float32"), "r": ((), "float32"), "done": ((), "bool")},
    metadata={"name": ((), "object"), "robot": ((), "object"), "ok": ((), "bool")}, splits={"train": 1})


def hand_episode(**changes) -> SourceEpisode:
    t = np.arange(3)
    rows, cols = np.mgrid[0:4, 0:6]
    cam = (20 * rows + 4 * cols)[None, :, :, None] + t[:, None, None, None]
    steps = {"cam": np.repeat(cam, 3, axis=3).astype(np.uint8),
             "joints": (np.arange(4)[None] + t[:, None]).astype(np.float32),
             "grip": np.asarray([0.08, 0.04, 0.0], np.float32),
             "pose": np.asarray([[0.0, 3.0], [0.05, -3.0], [0.12, -2.9]], np.float32),
             "r": np.asarray([0.0, 0.5, 1.0], np.float32), "done": np.asarray([False, False, True])}
    steps.update(changes)
    return SourceEpisode(dataset="hand", split="train", index=0, steps=steps,
                         metadata={"name": b"ep-7", "robot": b"arm", "ok": np.bool_(True)})


def test_map_episode_by_hand_crop_resize_delta_wrap_gripper_and_rewards():
    resolved = resolve(parse_mapping(HAND_MAPPING), HAND_LAYOUT)
    assert resolved.state_names == ("a", "b", "grip")
    assert resolved.action_names == ("pose[0]", "pose[1]", "gripper")
    episode = map_episode(hand_episode(), resolved)
    steps, meta = episode["steps"], episode["episode_metadata"]
    # crop rows 0-3, columns 2-5, then 2x2 area means: 20 r + 4 c averaged over each block, + t
    np.testing.assert_array_equal(steps["observation"]["image_top"][..., 0],
                                  [[[20 + t, 28 + t], [60 + t, 68 + t]] for t in range(3)])
    # state: (joints[1:3] - 1) * (2, 0.5), then grip
    np.testing.assert_allclose(steps["observation"]["state"], [[0, 0.5, 0.08], [2, 1, 0.04], [4, 1.5, 0]],
                               atol=1e-6)
    # action: 10 x (x_{t+1} - x_t); yaw difference -6 rad wraps to 2 pi - 6; gripper 0.08 open -> -1, 0.04 -> 0
    np.testing.assert_allclose(steps["action"], [[0.5, 2 * np.pi - 6, -1], [0.7, 0.1, 0], [0, 0, 0]], atol=1e-5)
    np.testing.assert_allclose(steps["reward"], [0, 1.5, 0])  # the last step's 1 joins the last transition
    np.testing.assert_array_equal(steps["is_terminal"], [False, False, True])
    np.testing.assert_array_equal(steps["discount"], [1, 0, 0])
    assert meta["episode_id"] == "ep-7" and meta["robot"] == "arm" and meta["task"] == "stack"
    assert meta["success"] and list(steps["language_instruction"]) == ["stack the blocks"] * 3

    with pytest.raises(MappingError, match=r"dataset 'hand', episode 'ep-7', step 1, field 'action': action "
                                           r"outside \[-1, 1\] \(made from the source's steps/pose, steps/grip\)"):
        map_episode(hand_episode(pose=np.asarray([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0]], np.float32)), resolved)
    with pytest.raises(MappingError, match=r"episode 'ep-7', field 'steps/joints': step fields have different"):
        map_episode(hand_episode(joints=np.zeros((2, 4), np.float32)), resolved)
    # a vector the features leave open ([None]) is checked per episode against the declared slice
    open_length = dataclasses.replace(HAND_LAYOUT, steps={**HAND_LAYOUT.steps, "joints": ((None,), "float32")})
    open_resolved = resolve(parse_mapping(HAND_MAPPING), open_length)
    assert open_resolved.spec == resolved.spec
    with pytest.raises(MappingError, match=r"episode 'ep-7', field 'steps/joints': slice \[1, 3\) does not fit "
                                           r"2 value\(s\) per step"):
        map_episode(hand_episode(joints=np.zeros((3, 2), np.float32)), open_resolved)


def test_loading_code_maps_episodes_without_a_conversion(example):
    source, result = example
    converted = by_id(result.dataset_dir)
    direct = list(iterate_mapped_episodes(source, load_mapping("rlds_dataset_builder_example"), "train"))
    assert [e["episode_metadata"]["episode_id"] for e in direct] == ["train-000000", "train-000001", "train-000002"]
    for episode in direct:
        want = converted[episode["episode_metadata"]["episode_id"]][1]
        for key in ("action", "reward", "discount", "is_terminal", "language_embedding"):
            np.testing.assert_array_equal(episode["steps"][key], want["steps"][key])
        np.testing.assert_array_equal(episode["steps"]["observation"]["state"], want["steps"]["observation"]["state"])


def test_mapping_errors_name_file_dataset_and_field(example, tmp_path):
    source, _ = example
    base = "[cameras.front]\nkey = 'observation/image'\nsize = [8, 8]\n[[state]]\nkey = 'observation/state'\n"
    with pytest.raises(MappingConfigError, match=r"lab\.toml: action\.clp: unknown key \(did you mean 'clip'\?\)"):
        parse_mapping(base + "[action]\nclp = true\n", path="lab.toml")
    with pytest.raises(MappingConfigError, match=r"cameras: at least one"):
        parse_mapping("[[state]]\nkey = 's'\n[[action.parts]]\nkey = 'a'\n")
    with pytest.raises(MappingConfigError, match=r"state\[0\]\.slice: \[3, 3\] is empty"):
        parse_mapping("[cameras.a]\nkey = 'i'\nsize = [8, 8]\n[[state]]\nkey = 's'\nslice = [3, 3]\n")
    with pytest.raises(MappingConfigError, match=r"no mapping file 'brige'.*bundled: .*bridge"):
        load_mapping("brige")
    layout = open_source(source)
    with pytest.raises(MappingError, match=r"dataset '.*source', field 'steps/observation/image_0': "
                                           r"cameras\.front\.key names a step field the dataset does not have "
                                           r"\(did you mean 'observation/image'\?"):
        resolve(load_mapping("bridge"), layout)
    too_wide = base + "[[action.parts]]\nkey = 'action'\nslice = [0, 12]\n"
    with pytest.raises(MappingError, match=r"field 'steps/action': action\.parts\[0\]: slice \[0, 12\) does not "
                                           r"fit the source's 10 value"):
        resolve(parse_mapping(too_wide), layout)
    (tmp_path / "wide.toml").write_text(too_wide)
    with pytest.raises(ConversionError, match=r"steps/action"):
        map_rlds(MapRldsConfig(source=source, mapping=str(tmp_path / "wide.toml"), output_dir=str(tmp_path)),
                 log=QUIET)
    assert not (tmp_path / "example_dataset_mapped").exists()  # nothing written for a mapping that does not fit


def test_unreadable_records_are_dead_letters_and_the_rest_converts(tmp_path):
    source = Path(write_example_source(tmp_path / "source"))
    shard = source / "example_dataset-train.tfrecord-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[-40] ^= 0xFF  # inside the last record (episode train[2]): its checksum no longer matches
    shard.write_bytes(bytes(data))
    result = map_rlds(MapRldsConfig(source=str(source), mapping="rlds_dataset_builder_example",
                                    output_dir=str(tmp_path / "data"), episodes_per_item=1), log=QUIET)
    assert result.episodes == {"train": 2, "validation": 1}
    [dead] = result.dead_letters
    assert dead["file"] == f"{source}:train[2:3]"
    assert dead["reason"].startswith(f"dataset {str(source)!r}: cannot read episodes 2..2 of split 'train': ")


def test_cli_writes_once_and_refuses_to_overwrite(example, tmp_path, capsys):
    source, _ = example
    argv = [f"--source={source}", "--mapping=rlds_dataset_builder_example", f"--output_dir={tmp_path}",
            "--dataset=door", "--episodes_per_item=1"]
    assert map_rlds_cli.main(argv) == 0
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == str(tmp_path / "door" / "1.0.0")
    assert "Mapped 3 train, 1 validation episode(s); 0 dead letter(s)" in out.err
    assert map_rlds_cli.main(argv) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_a_mapped_dataset_feeds_sft_data_and_replay(example):
    source, result = example
    stats = statistics.load_statistics(result.dataset_dir)
    backbone = get_config("tiny").backbone
    kwargs = dict(window=backbone.window, max_text_tokens=backbone.max_text_tokens, vocab_size=backbone.vocab_size,
                  normalizer=StateNormalizer.from_statistics(stats))
    data = StepData(result.dataset_dir, "train", **kwargs)
    batch = data.sample(np.random.default_rng(0), 4)
    assert data.cameras == ("front", "wrist") and batch["images"]["front"].shape == (4, backbone.window, 64, 64, 3)
    assert batch["state"].shape == (4, backbone.window, 10) and batch["language_embedding"].shape == (4, 512)
    # SFT's data straight from the source through the mapping, no conversion: same steps
    direct = StepData(None, "train", **kwargs, episodes=iterate_mapped_episodes(
        source, load_mapping("rlds_dataset_builder_example"), "train"))
    for key in ("action", "state", "language_embedding"):
        np.testing.assert_array_equal(direct.arrays[key], data.arrays[key])
    assert np.abs(direct.arrays["image_front"].astype(int) - data.arrays["image_front"]).mean() < 2  # JPEG
    keys = ("image_front", "state")
    config = ReplayConfig(observation_keys=keys, min_size_online=1, samples_per_insert=1000.0)
    with ReplayServer.from_config(config, transition_signature(result.dataset_dir, keys)) as server:
        loaded = load_rlds_into_table(result.dataset_dir, "train", server.address, "demo", observation_keys=keys,
                                      progress=False)
        assert (loaded["episodes"], loaded["transitions"]) == (3, 3 + 4 + 5)
        assert (loaded["terminal_episodes"], loaded["time_limit_episodes"]) == (2, 1)
