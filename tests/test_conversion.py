"""The Beam conversion job on real files: round trip, dead letters, determinism, Dask, CLI."""

import collections
import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET, SMALL_SPEC, make_episode
from vlarft.datasets import statistics
from vlarft.datasets.reader import dataset_spec, iterate_episodes
from vlarft.datasets.hilserl_pickle import PickleImportConfig
from vlarft.datasets.raw_episodes import write_raw_episode
from vlarft.datasets.safe_pickle import UnsafePickleError, load_data_pickle
from vlarft.datasets.schema import EpisodeSpec, flatten
from vlarft.pipelines.convert_demos import ConversionError, convert

REPO = Path(__file__).resolve().parents[1]


def write_demo_dir(directory: Path, count: int = 6) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    episodes = {}
    for i in range(count):
        ep = make_episode(episode_id=f"ep{i:02d}", length=3 + i, terminal=i % 2 == 0, seed=i)
        write_raw_episode(directory / f"ep{i:02d}.npz", ep, SMALL_SPEC)
        episodes[f"ep{i:02d}"] = ep
    return episodes


def read_all(dataset_dir) -> dict:
    out = {}
    for split in ("train", "validation"):
        try:
            for ep in iterate_episodes(dataset_dir, split):
                out[ep["episode_metadata"]["episode_id"]] = (split, ep)
        except (KeyError, ValueError):
            pass
    return out


def assert_same_episode(want, got):
    w, g = flatten(want["steps"]), flatten(got["steps"])
    assert set(w) == set(g)
    for key in w:
        if key.startswith("observation/image_"):
            diff = np.abs(w[key].astype(int) - g[key].astype(int))
            assert w[key].shape == g[key].shape and diff.mean() < 3 and diff.max() < 40, key  # JPEG tolerance
        elif key == "language_instruction":
            assert list(w[key]) == list(g[key])
        else:
            assert np.array_equal(w[key], g[key]), key
    for name in ("episode_id", "task", "instruction", "source", "success", "robot", "operator", "recorded_at"):
        assert want["episode_metadata"][name] == got["episode_metadata"][name], name


def test_round_trip_splits_stats_and_rerun(tmp_path):
    episodes = write_demo_dir(tmp_path / "raw", count=6)
    result = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "unit_demos", log=QUIET)
    assert result.episodes == {"train": 5, "validation": 1} and result.dead_letters == []
    assert dataset_spec(result.dataset_dir) == SMALL_SPEC
    back = read_all(result.dataset_dir)
    assert set(back) == set(episodes)
    for eid, (split, ep) in back.items():
        assert_same_episode(episodes[eid], ep)
        assert ep["episode_metadata"]["file_path"] == str((tmp_path / "raw" / f"{eid}.npz").absolute())
    stats = statistics.load_statistics(result.dataset_dir)
    train = [episodes[e] for e, (split, _) in sorted(back.items()) if split == "train"]
    want = statistics.compute_statistics((e["steps"]["action"], e["steps"]["observation"]["state"]) for e in train)
    assert stats["action"]["mean"] == pytest.approx(want["action"]["mean"])
    assert stats["num_transitions"] == sum(len(e["steps"]["action"]) - 1 for e in train)
    assert stats["episodes_per_split"] == {"train": 5, "validation": 1}
    shards = sorted(p.name for p in Path(result.dataset_dir).glob("*.tfrecord*"))
    before = {name: (Path(result.dataset_dir) / name).read_bytes() for name in shards}
    again = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "unit_demos", overwrite=True, log=QUIET)
    assert again.dataset_dir == result.dataset_dir
    after = {p.name: p.read_bytes() for p in Path(again.dataset_dir).glob("*.tfrecord*")}
    assert after == before  # byte-identical on the same inputs
    assert [p.name for p in (tmp_path / "data" / "unit_demos").iterdir()] == ["1.0.0"]


def test_bad_inputs_are_dead_lettered_and_good_ones_survive(tmp_path):
    episodes = write_demo_dir(tmp_path / "raw", count=4)
    good = (tmp_path / "raw" / "ep00.npz").read_bytes()
    (tmp_path / "raw" / "zz_truncated.npz").write_bytes(good[: len(good) // 3])
    wrong_dim = EpisodeSpec(cameras=SMALL_SPEC.cameras, action_dim=6)
    write_raw_episode(tmp_path / "raw" / "zz_sixdof.npz", make_episode("six", spec=wrong_dim), wrong_dim)
    dup = make_episode("ep01", seed=99)
    write_raw_episode(tmp_path / "raw" / "zz_duplicate.npz", dup, SMALL_SPEC)
    (tmp_path / "raw" / "zz_garbage.pkl").write_bytes(b"\x80\x04not a pickle")
    result = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "with_bad", allow_pickles=True, log=QUIET)
    by_file = {Path(d["file"]).name: d for d in result.dead_letters}
    assert set(by_file) == {"zz_truncated.npz", "zz_sixdof.npz", "zz_duplicate.npz", "zz_garbage.pkl"}
    assert "truncated" in by_file["zz_truncated.npz"]["reason"]
    assert "'action'" in by_file["zz_sixdof.npz"]["reason"] and by_file["zz_sixdof.npz"]["episode_id"] == "six"
    assert "duplicate" in by_file["zz_duplicate.npz"]["reason"]
    assert "zz_garbage.pkl" in by_file["zz_garbage.pkl"]["reason"]
    back = read_all(result.dataset_dir)
    assert set(back) == set(episodes)
    assert_same_episode(episodes["ep01"], back["ep01"][1])  # the first file keeps its id
    lines = (Path(result.dataset_dir) / "dead_letters.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["reason"] for line in lines)


def test_failed_conversion_keeps_the_old_dataset(tmp_path):
    write_demo_dir(tmp_path / "raw", count=2)
    first = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "keep", log=QUIET)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.npz").write_bytes(b"junk")
    with pytest.raises(ConversionError):
        convert([str(tmp_path / "junk")], str(tmp_path / "data"), "keep", overwrite=True, log=QUIET)
    assert len(read_all(first.dataset_dir)) == 2


def test_an_existing_dataset_is_replaced_only_with_overwrite(tmp_path):
    write_demo_dir(tmp_path / "three", count=3)
    write_demo_dir(tmp_path / "one", count=1)
    first = convert([str(tmp_path / "three")], str(tmp_path / "data"), "mine", log=QUIET)
    with pytest.raises(ConversionError, match=r"mine/1\.0\.0 already exists; pass --overwrite"):
        convert([str(tmp_path / "one")], str(tmp_path / "data"), "mine", log=QUIET)
    assert len(read_all(first.dataset_dir)) == 3
    convert([str(tmp_path / "one")], str(tmp_path / "data"), "mine", overwrite=True, log=QUIET)
    assert len(read_all(first.dataset_dir)) == 1


SWAP_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from vlarft.datasets import directory_swap
real_rename = os.rename
def rename(src, dst):
    if Path(src).name.startswith(".incomplete-"):  # the new dataset's move into place
        os.kill(os.getpid(), signal.SIGKILL)
    real_rename(src, dst)
os.rename = rename
final = Path(sys.argv[1])
directory_swap.swap_into_place(directory_swap.incomplete_dir(final), final, "conversion.json")
"""


@pytest.mark.parametrize("new_one_complete", [True, False])
def test_a_swap_killed_between_its_renames_is_finished_or_undone_at_the_next_start(tmp_path, new_one_complete):
    write_demo_dir(tmp_path / "three", count=3)
    write_demo_dir(tmp_path / "one", count=1)
    old = convert([str(tmp_path / "three")], str(tmp_path / "data"), "mine", log=QUIET)
    new = convert([str(tmp_path / "one")], str(tmp_path / "staging"), "mine", log=QUIET)
    final = Path(old.dataset_dir)
    Path(new.dataset_dir).rename(final.with_name(".incomplete-1.0.0"))  # a finished job, about to swap
    proc = subprocess.run([sys.executable, "-c", SWAP_KILLED_BETWEEN_RENAMES, str(final)], timeout=60)
    assert proc.returncode == -9
    assert not final.exists() and final.with_name(".replaced-1.0.0").exists()  # what kill -9 left
    if not new_one_complete:
        (final.with_name(".incomplete-1.0.0") / "conversion.json").unlink()
    logged = []
    with pytest.raises(ConversionError, match="already exists"):  # the next start repairs, then refuses
        convert([str(tmp_path / "three")], str(tmp_path / "data"), "mine", log=logged.append)
    assert len(read_all(final)) == (1 if new_one_complete else 3)
    assert ("finished an interrupted swap" if new_one_complete else "restored") in logged[0]
    left = {p.name for p in final.parent.iterdir()}
    assert left == ({"1.0.0"} if new_one_complete else {"1.0.0", ".incomplete-1.0.0"})  # no .replaced-


def test_a_file_name_that_is_not_utf8_is_dead_lettered_and_the_rest_converts(tmp_path):
    episodes = write_demo_dir(tmp_path / "raw", count=2)
    write_raw_episode(tmp_path / "raw" / "latin1.npz", make_episode("latin1", seed=7), SMALL_SPEC)
    os.rename(tmp_path / "raw" / "latin1.npz", os.fsencode(tmp_path / "raw") + b"/caf\xe9.npz")
    result = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "names", log=QUIET)
    [dead] = result.dead_letters
    assert dead["file"].endswith("caf\\xe9.npz") and "not valid UTF-8" in dead["reason"]
    assert set(read_all(result.dataset_dir)) == set(episodes)
    assert "caf\\\\xe9.npz" in (Path(result.dataset_dir) / "dead_letters.jsonl").read_text()


def hilserl_episode(rng, rewards, last_done=True, intervene_at=None, human=None):
    """Transitions in the HIL-SERL layout (2-frame stacked observations), next_obs[t] == obs[t+1]."""
    def obs():
        return {"side_policy": np.full((2, 16, 16, 3), rng.integers(0, 255), np.uint8),
                "wrist_1": np.full((2, 16, 16, 3), rng.integers(0, 255), np.uint8),
                "classifier": np.zeros((2, 8, 8, 3), np.uint8),
                "state": rng.normal(size=(2, 19)).astype(np.float32)}
    frames = [obs() for _ in range(len(rewards) + 1)]
    out = []
    for t, reward in enumerate(rewards):
        done = last_done and t == len(rewards) - 1
        out.append({"observations": frames[t], "actions": rng.uniform(-1, 1, 7).astype(np.float32),
                    "next_observations": frames[t + 1], "rewards": reward, "masks": 1.0 - done, "dones": done,
                    "infos": {"intervene_action": human} if t == intervene_at else {}})
    return out


def test_hilserl_pickle_import(tmp_path):
    rng = np.random.default_rng(0)
    human = np.full(7, 0.25, np.float32)
    success = hilserl_episode(rng, [-0.05, -0.05, -0.05, 10.0])
    timeout = hilserl_episode(rng, [-0.05, -0.05], intervene_at=0, human=human)
    trailing = hilserl_episode(rng, [-0.05], last_done=False)
    (tmp_path / "pkl").mkdir()
    with open(tmp_path / "pkl" / "banana_demos.pkl", "wb") as f:
        pickle.dump(success + timeout + trailing, f)
    config = PickleImportConfig(task="pick_banana", instruction="pick up the banana",
                                camera_names={"side_policy": "front", "wrist_1": "wrist"},
                                ignore_keys=("classifier",))
    result = convert([str(tmp_path / "pkl")], str(tmp_path / "data"), "banana", pickle_config=config,
                     allow_pickles=True, validation_fraction=0.0, log=QUIET)
    assert result.episodes == {"train": 3} and result.dead_letters == []
    assert result.spec == EpisodeSpec(cameras={"front": (16, 16), "wrist": (16, 16)})
    eps = {e: ep for e, (_, ep) in read_all(result.dataset_dir).items()}
    ok, late, tail = eps["banana_demos-0000"], eps["banana_demos-0001"], eps["banana_demos-0002"]
    assert len(ok["steps"]["action"]) == 5 and ok["steps"]["is_terminal"][-1]
    assert ok["steps"]["reward"].tolist() == [0, 0, 0, 1, 0] and ok["episode_metadata"]["success"]
    assert np.array_equal(ok["steps"]["action"][:4], np.stack([t["actions"] for t in success]))
    assert np.array_equal(ok["steps"]["observation"]["state"][-1], success[-1]["next_observations"]["state"][-1])
    assert np.array_equal(ok["steps"]["observation"]["state"][0], success[0]["observations"]["state"][-1])
    front = ok["steps"]["observation"]["image_front"][1].astype(int)
    assert np.abs(front - success[1]["observations"]["side_policy"][-1]).max() <= 2
    # A HIL-SERL time-out is `dones` too; here it is a time-limit end, not a terminal.
    assert not late["steps"]["is_terminal"].any() and not late["episode_metadata"]["success"]
    assert np.array_equal(late["steps"]["action"][0], human) and late["steps"]["intervention"][0]
    assert len(tail["steps"]["action"]) == 2 and not tail["steps"]["is_terminal"].any()
    assert tail["episode_metadata"]["task"] == "pick_banana"
    assert tail["steps"]["language_instruction"][0] == "pick up the banana"


class RunsAShellCommand:
    """What a hostile pickle holds: unpickling it runs `command`."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_hostile_pickle(path: Path, marker: Path) -> None:
    transitions = hilserl_episode(np.random.default_rng(1), [0.0, 1.0])
    transitions[0]["infos"] = {"note": RunsAShellCommand(f"touch {shlex.quote(str(marker))}")}
    path.write_bytes(pickle.dumps(transitions))


def test_pickles_are_opt_in_and_never_run_code(tmp_path):
    write_demo_dir(tmp_path / "raw", count=2)
    with open(tmp_path / "raw" / "trusted_demos.pkl", "wb") as f:
        pickle.dump(hilserl_episode(np.random.default_rng(0), [0.0, 1.0]), f, protocol=2)
    marker = tmp_path / "the_pickle_ran_code"
    (tmp_path / "raw" / "nested").mkdir()
    write_hostile_pickle(tmp_path / "raw" / "nested" / "demos.pkl", marker)  # found by the recursive search
    config = PickleImportConfig(camera_names={"side_policy": "front", "wrist_1": "wrist"}, ignore_keys=("classifier",))

    closed = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "closed", pickle_config=config, log=QUIET)
    reasons = {Path(d["file"]).name: d["reason"] for d in closed.dead_letters}
    assert set(reasons) == {"trusted_demos.pkl", "demos.pkl"} and all("--allow_pickles" in r for r in reasons.values())
    assert sum(closed.episodes.values()) == 2 and not marker.exists()

    opened = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "opened", pickle_config=config,
                     allow_pickles=True, log=QUIET)
    assert not marker.exists()
    [dead] = opened.dead_letters
    assert Path(dead["file"]).name == "demos.pkl" and "system" in dead["reason"] and "refused" in dead["reason"]
    assert sum(opened.episodes.values()) == 3  # two raw episodes + the trusted pickle's one


def test_restricted_unpickler_builds_data_only(tmp_path):
    data = {"image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "flag": np.bool_(True),
            "reward": np.float32(0.5), "set": {1, 2}, "bytes": b"ab", "ordered": collections.OrderedDict(a=1),
            "nested": [(1.5, None, "text", 3 + 1j)]}
    for protocol in (2, 4, 5):
        (tmp_path / "data.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_data_pickle(tmp_path / "data.pkl")
        assert np.array_equal(back["image"], data["image"]) and back["image"].dtype == np.uint8
        assert {k: v for k, v in back.items() if k != "image"} == {k: v for k, v in data.items() if k != "image"}
    for hostile, named in [(collections.Counter(a=1), "collections.Counter"),
                           (np.array([{"x": 1}], dtype=object), "numpy array of Python objects"),
                           (RunsAShellCommand("true"), "system")]:
        (tmp_path / "bad.pkl").write_bytes(pickle.dumps(hostile))
        with pytest.raises(UnsafePickleError, match=named):
            load_data_pickle(tmp_path / "bad.pkl")


@pytest.mark.timeout(300)
def test_dask_runner_matches_direct_runner(tmp_path):
    from dask.distributed import LocalCluster

    write_demo_dir(tmp_path / "raw", count=5)
    direct = convert([str(tmp_path / "raw")], str(tmp_path / "direct"), "same", num_shards=2, log=QUIET)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        dask = convert([str(tmp_path / "raw")], str(tmp_path / "dask"), "same", num_shards=2, log=QUIET,
                       pipeline_args=["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                                      f"--dask_client_address={cluster.scheduler_address}"])
    assert "DaskRunner" in dask.runner and dask.episodes == direct.episodes
    files = sorted(p.name for p in Path(direct.dataset_dir).glob("*.tfrecord*"))
    assert files == sorted(p.name for p in Path(dask.dataset_dir).glob("*.tfrecord*"))
    for name in files:
        assert (Path(direct.dataset_dir) / name).read_bytes() == (Path(dask.dataset_dir) / name).read_bytes()


def test_cli_last_line_is_the_dataset_dir(tmp_path):
    write_demo_dir(tmp_path / "raw", count=3)
    (tmp_path / "raw" / "bad.npz").write_bytes(b"nope")
    write_hostile_pickle(tmp_path / "raw" / "demos.pkl", tmp_path / "the_pickle_ran_code")
    proc = subprocess.run([sys.executable, str(REPO / "pipelines" / "convert_demos.py"),
                           f"--input={tmp_path / 'raw'}", f"--output_dir={tmp_path / 'data'}", "--dataset=cli_demo"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last == str(tmp_path / "data" / "cli_demo" / "1.0.0")
    assert "dead letter" in proc.stderr and "bad.npz" in proc.stderr
    assert "demos.pkl" in proc.stderr and "--allow_pickles" in proc.stderr
    assert not (tmp_path / "the_pickle_ran_code").exists()
    import tensorflow_datasets as tfds
    assert tfds.builder_from_directory(last).info.splits["train"].num_examples == 2
