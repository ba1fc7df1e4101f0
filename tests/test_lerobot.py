"""LeRobotDataset v3.0 in and out on real files: RLDS -> LeRobot -> RLDS round trip, the exported
directory against the format (and against a directory lerobot 0.6.1 itself wrote), importing that
real lerobot fixture, and bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import QUIET, make_episode
from test_conversion import read_all
from vlarft.datasets import lerobot_format as fmt
from vlarft.datasets import lerobot_mapping, lerobot_video
from vlarft.datasets.lerobot_format import LeRobotFormatError
from vlarft.datasets.frames import as_stored
from vlarft.datasets.raw_episodes import write_raw_episode
from vlarft.datasets.schema import EpisodeSpec, flatten
from vlarft.pipelines.convert_demos import convert
from vlarft.pipelines.lerobot_export import export_lerobot
from vlarft.pipelines.lerobot_import import LeRobotEpisodeReader, import_lerobot
from vlarft.pipelines.lerobot_import import main as lerobot_import_main
from vlarft.pipelines.rlds_job import ConversionError

FIXTURE = Path(__file__).parent / "data" / "lerobot_v30_fixture"  # written by lerobot 0.6.1 (make_lerobot_fixture.py)
IMAGES_FIXTURE = FIXTURE.with_name("lerobot_v30_images_fixture")  # the same with PNG `image` features
SPEC = EpisodeSpec(cameras={"front": (24, 32), "wrist": (16, 32)})
FULL_SPEC = EpisodeSpec(cameras=SPEC.cameras, embedding_dim=4, with_mc_return=True, language_embedding_dim=3)
# AV1 (crf 30, 4:2:0) measured on these smooth test frames: max 12, mean 2.2 grey levels (RLDS JPEG included)
IMAGE_MAX_ERROR, IMAGE_MEAN_ERROR = 24, 4.0


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Our RLDS dataset (4 episodes, 2 cameras, with a validation split) -> LeRobot -> RLDS."""
    tmp = tmp_path_factory.mktemp("lerobot")
    rng = np.random.default_rng(7)
    for i in range(4):
        episode = make_episode(episode_id=f"ep{i}", length=2 + i, terminal=i % 2 == 0, seed=i, spec=SPEC)
        episode["episode_metadata"]["recorded_at"] = f"2026-12-01T10:0{i}:00Z"
        if i == 3:  # a second instruction inside one episode: per-frame tasks
            episode["steps"]["language_instruction"][2:] = "then lift it"
        steps = episode["steps"]  # the optional fields later stages add, so every one round-trips
        steps["mc_return"] = rng.normal(size=3 + i).astype(np.float32)
        steps["embedding"] = rng.normal(size=(3 + i, 4)).astype(np.float32)
        steps["language_embedding"] = rng.normal(size=(3 + i, 3)).astype(np.float32)
        write_raw_episode(tmp / f"ep{i}.npz", episode, FULL_SPEC)
    source = convert([str(tmp)], str(tmp / "rlds"), "tiny", validation_fraction=0.25, log=QUIET).dataset_dir
    before = tree_digest(Path(source))
    exported = export_lerobot(source, str(tmp / "lerobot"), fps=15, log=QUIET)
    back = import_lerobot(exported.lerobot_dir, str(tmp / "back"), "tiny", log=QUIET)
    return {"source": source, "lerobot": Path(exported.lerobot_dir), "export": exported, "back": back,
            "source_unchanged": tree_digest(Path(source)) == before}


def test_round_trip_rlds_lerobot_rlds(round_trip):
    assert round_trip["source_unchanged"]
    assert round_trip["export"].dead_letters == [] and round_trip["back"].dead_letters == []
    assert round_trip["back"].spec == FULL_SPEC  # embeddings, mc_return, language_embedding included
    want, got = read_all(round_trip["source"]), read_all(round_trip["back"].dataset_dir)
    assert set(got) == set(want) == {f"ep{i}" for i in range(4)}
    errors = []
    for eid, (split, episode) in want.items():
        back_split, back = got[eid]
        assert back_split == split
        assert back["episode_metadata"] == episode["episode_metadata"]
        w, g = flatten(episode["steps"]), flatten(back["steps"])
        assert set(w) == set(g)
        for key in w:
            if key.startswith("observation/image_"):
                assert g[key].shape == w[key].shape
                errors.append(np.abs(w[key].astype(int) - g[key].astype(int)))
            elif key == "language_instruction":
                assert list(g[key]) == list(w[key])
            else:
                assert g[key].dtype == w[key].dtype and np.array_equal(g[key], w[key]), (eid, key)
    errors = np.concatenate([e.reshape(-1) for e in errors])
    assert errors.max() <= IMAGE_MAX_ERROR and errors.mean() <= IMAGE_MEAN_ERROR, (errors.max(), errors.mean())


def test_files_roll_at_their_budgets_and_still_round_trip(round_trip, tmp_path):
    """Budgets small enough for one episode per data file and per video file, two files per chunk."""
    exported = export_lerobot(round_trip["source"], str(tmp_path / "rolled"), fps=15, log=QUIET,
                              data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6, chunks_size=2)
    root = Path(exported.lerobot_dir)
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    placed = [(r["data/chunk_index"], r["data/file_index"]) for r in rows]
    assert placed == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for row in rows:
        assert row["videos/observation.images.front/from_timestamp"] == 0.0
        assert (row["videos/observation.images.wrist/chunk_index"], row["videos/observation.images.wrist/file_index"]) \
            == (row["data/chunk_index"], row["data/file_index"])
    assert (root / "data/chunk-001/file-001.parquet").is_file()
    assert (root / "videos/observation.images.wrist/chunk-001/file-001.mp4").is_file()
    back = import_lerobot(str(root), str(tmp_path / "back"), "rolled", log=QUIET)
    want, got = read_all(round_trip["source"]), read_all(back.dataset_dir)
    assert set(got) == set(want)
    for eid, (split, episode) in want.items():
        np.testing.assert_array_equal(got[eid][1]["steps"]["action"], episode["steps"]["action"])
        assert got[eid][1]["steps"]["observation"]["image_front"].shape == episode["steps"]["observation"]["image_front"].shape


def test_export_matches_the_lerobot_format(round_trip):
    root = round_trip["lerobot"]
    info = json.loads((root / fmt.INFO_PATH).read_text())
    made_by_lerobot = json.loads((FIXTURE / fmt.INFO_PATH).read_text())
    assert list(info) == list(made_by_lerobot)  # same keys, same order
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, 3 + 4 + 5 + 6, 2)
    assert info["splits"] == {"train": "0:3", "validation": "3:4"}
    assert (info["data_path"], info["video_path"]) == (made_by_lerobot["data_path"], made_by_lerobot["video_path"])
    features = info["features"]
    for key, default in fmt.DEFAULT_FEATURES.items():
        assert features[key] == default
    video = features["observation.images.front"]
    assert video["shape"] == [24, 32, 3] and video["names"] == ["height", "width", "channels"]
    assert video["info"] == dict(made_by_lerobot["features"]["observation.images.front"]["info"], **{
        "video.height": 24, "video.width": 32, "video.fps": 15})  # av1 yuv420p g=2 crf=30 preset=12
    assert features["action"]["names"] == ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]
    assert features["observation.state"]["names"][:3] == ["tcp_pos_0", "tcp_pos_1", "tcp_pos_2"]
    assert len(features["observation.state"]["names"]) == 19

    # data: exactly the non-video features as columns, lerobot's types, one row group per episode
    data = pq.ParquetFile(root / "data/chunk-000/file-000.parquet")
    assert data.schema_arrow.names == [k for k, f in features.items() if f["dtype"] != "video"]
    fixture_schema = pq.read_schema(FIXTURE / "data/chunk-000/file-000.parquet")
    for name in ("action", "next.reward", "timestamp", "index", "task_index"):
        assert str(data.schema_arrow.field(name).type).split("[")[0] == str(fixture_schema.field(name).type).split("[")[0]
    assert b"huggingface" in data.schema_arrow.metadata  # the `datasets` features lerobot's files carry
    assert data.num_row_groups == 4
    frames = data.read()
    assert frames["index"].to_pylist() == list(range(18))
    np.testing.assert_array_equal(frames["timestamp"].to_numpy(), (frames["frame_index"].to_numpy() / 15).astype(np.float32))

    # meta/episodes: lerobot's columns (plus ours), contiguous index ranges and video spans
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    fixture_columns = pq.read_schema(FIXTURE / "meta/episodes/chunk-000/file-000.parquet").names
    for column in fixture_columns:
        if "next.success" not in column:
            assert column in episodes.column_names, column
    rows = episodes.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2, 3]
    assert [r[lerobot_mapping.SPLIT_COLUMN] for r in rows] == ["train", "train", "train", "validation"]
    position = 0
    for row in rows:
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (position, position + row["length"])
        for key in ("observation.images.front", "observation.images.wrist"):
            assert row[f"videos/{key}/from_timestamp"] == pytest.approx(position / 15)
            assert row[f"videos/{key}/to_timestamp"] == pytest.approx((position + row["length"]) / 15)
        mine = frames["episode_index"].to_numpy() == row["episode_index"]
        assert frames["frame_index"].to_numpy()[mine].tolist() == list(range(row["length"]))
        position += row["length"]
    for row in rows:
        two = row["vlarft/episode_id"] == "ep3"
        assert row["tasks"] == ["do the unit task", "then lift it"] if two else ["do the unit task"]

    # tasks: the pandas frame lerobot reads (index = task text, ordered by task_index)
    tasks = pd.read_parquet(root / fmt.TASKS_PATH)
    assert tasks.index.name == "task" and tasks["task_index"].tolist() == [0, 1]
    assert tasks.iloc[int(frames["task_index"].to_numpy()[0])].name == "do the unit task"

    # videos: one AV1 file per camera, constant 15 fps, every frame of every episode
    for key, (height, width) in (("observation.images.front", (24, 32)), ("observation.images.wrist", (16, 32))):
        facts = lerobot_video.probe(root / f"videos/{key}/chunk-000/file-000.mp4")
        assert facts == {"codec": "av1", "height": height, "width": width, "pix_fmt": "yuv420p", "fps": 15,
                         "frames": 18, "duration_s": pytest.approx(18 / 15)}

    # stats: every feature with lerobot's stat names; images (3, 1, 1) in [0, 1]; counts = frames
    stats = json.loads((root / fmt.STATS_PATH).read_text())
    assert set(stats) == set(features)
    for feature, values in stats.items():
        assert list(values) == list(json.loads((FIXTURE / fmt.STATS_PATH).read_text())["action"]), feature
        assert values["count"] == [18]
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["index"]["min"] == [0] and stats["index"]["max"] == [17]
    assert stats["index"]["mean"] == pytest.approx([8.5])


def test_import_a_dataset_written_by_lerobot_and_bad_episodes_are_dead_letters(tmp_path):
    source = tmp_path / "fixture_copy"
    shutil.copytree(FIXTURE, source)
    # damage episode 1 only: it loses a frame in the data parquet (its length says 6)
    path = source / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    keep = [i for i, (e, f) in enumerate(zip(table["episode_index"].to_pylist(), table["frame_index"].to_pylist()))
            if not (e == 1 and f == 5)]
    pq.write_table(table.take(keep), path)
    before = tree_digest(source)
    result = import_lerobot(str(source), str(tmp_path / "out"), "from_lerobot", log=QUIET)
    assert tree_digest(source) == before  # the source is only read
    assert result.spec == EpisodeSpec(cameras={"front": (24, 32)}, state_dim=4, action_dim=3)
    assert [d["episode_id"] for d in result.dead_letters] == ["fixture_copy_000001"]
    reason = result.dead_letters[0]["reason"]
    assert str(source) in reason and "episode 1" in reason and "'length'" in reason
    got = {ep["episode_metadata"]["episode_id"]: ep for _, ep in read_all(result.dataset_dir).values()}
    assert sorted(got) == ["fixture_copy_000000", "fixture_copy_000002"]
    frames = pq.read_table(FIXTURE / "data/chunk-000/file-000.parquet").to_pandas()
    for index, length, instruction in ((0, 4, "pick the cube"), (2, 3, "pick the cube")):
        episode = got[f"fixture_copy_{index:06d}"]
        rows = frames[frames["episode_index"] == index]
        steps = episode["steps"]
        np.testing.assert_array_equal(steps["observation"]["state"], np.stack(rows["observation.state"]))
        np.testing.assert_array_equal(steps["action"], np.stack(rows["action"]))
        np.testing.assert_array_equal(steps["reward"], rows["next.reward"].to_numpy())
        assert list(steps["language_instruction"]) == [instruction] * length
        assert steps["is_terminal"].tolist() == [False] * (length - 1) + [True]  # from next.success
        assert steps["discount"].tolist() == [1.0] * (length - 2) + [0.0, 0.0]
        assert episode["episode_metadata"]["success"] and episode["episode_metadata"]["robot"] == "toy_arm"
        error = np.abs(steps["observation"]["image_front"].astype(int) - drawn_frames(index, length))
        assert error.mean() <= IMAGE_MEAN_ERROR and error.max() <= IMAGE_MAX_ERROR, (error.mean(), error.max())


def drawn_frames(episode: int, length: int) -> np.ndarray:
    """The frames make_lerobot_fixture.py drew."""
    y, x = np.mgrid[0:24, 0:32]
    return np.stack([np.clip(np.stack([60 + 4 * x + 8 * t, 80 + 5 * y + 20 * episode, 120 + 2 * x + 2 * y], -1),
                             0, 255) for t in range(length)]).astype(np.uint8)


def test_import_png_image_features_exactly(tmp_path):
    result = import_lerobot(str(IMAGES_FIXTURE), str(tmp_path / "out"), "png", log=QUIET)
    got = {ep["episode_metadata"]["episode_id"]: ep for _, ep in read_all(result.dataset_dir).values()}
    assert len(got) == 3 and result.dead_letters == []
    for index, length in ((0, 4), (1, 6), (2, 3)):
        frames = got[f"lerobot_v30_images_fixture_{index:06d}"]["steps"]["observation"]["image_front"]
        # PNG is lossless: exactly the drawn frames as our RLDS stores them (JPEG)
        np.testing.assert_array_equal(frames, np.stack([as_stored(f) for f in drawn_frames(index, length)]))


def damaged_copy(tmp_path, change) -> Path:
    source = tmp_path / "damaged"
    shutil.copytree(FIXTURE, source)
    change(source)
    return source


def read_episode(source: Path, index: int):
    meta = fmt.read_meta(source)
    return list(LeRobotEpisodeReader(meta, lerobot_mapping.import_layout(meta), "damaged")(f"{source}#{index}"))


def test_bad_lerobot_input_names_dataset_episode_and_field(tmp_path, capsys):
    def set_info(source, **changes):
        info = json.loads((source / fmt.INFO_PATH).read_text())
        for dotted, value in changes.items():
            node = info
            *parents, last = dotted.split("|")
            for p in parents:
                node = node[p]
            node[last] = value
        (source / fmt.INFO_PATH).write_text(json.dumps(info))

    older = damaged_copy(tmp_path / "a", lambda s: set_info(s, codebase_version="v2.1"))
    with pytest.raises(ConversionError, match=r"damaged.*codebase_version.*'v2.1'"):
        import_lerobot(str(older), str(tmp_path / "out"), log=QUIET)

    no_video = damaged_copy(tmp_path / "b", lambda s: (s / "videos/observation.images.front/chunk-000/file-000.mp4").unlink())
    [dead] = read_episode(no_video, 2)
    assert "episode 2" in dead.reason and "'observation.images.front'" in dead.reason and "missing" in dead.reason

    def drop_reward_column(source):
        path = source / "data/chunk-000/file-000.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["next.reward"]), path)
    [dead] = read_episode(damaged_copy(tmp_path / "c", drop_reward_column), 0)
    assert "episode 0" in dead.reason and "'next.reward'" in dead.reason and "not a column" in dead.reason

    wrong_shape = damaged_copy(tmp_path / "d", lambda s: set_info(s, **{"features|observation.state|shape": [5]}))
    [dead] = read_episode(wrong_shape, 1)
    assert "episode 1" in dead.reason and "'observation.state'" in dead.reason and "[4]" in dead.reason

    def scale_actions(source):  # a foreign action space: our schema wants [-1, 1]
        path = source / "data/chunk-000/file-000.parquet"
        table = pq.read_table(path)
        scaled = pa.FixedSizeListArray.from_arrays(pa.array(np.stack(table["action"].to_numpy(zero_copy_only=False))
                                                            .reshape(-1) * 5, pa.float32()), 3)
        pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", scaled), path)
    [dead] = read_episode(damaged_copy(tmp_path / "e", scale_actions), 0)
    assert "episode 0" in dead.reason and "'action'" in dead.reason and "outside [-1, 1]" in dead.reason

    with pytest.raises(LeRobotFormatError, match="no meta/info.json"):
        fmt.read_meta(tmp_path / "nothing_here")
    assert lerobot_import_main([str(older), f"--out={tmp_path / 'cli'}"]) == 1  # the CLI: one error line
    assert "error: LeRobot dataset" in capsys.readouterr().err


def test_dask_runner_writes_the_same_files(round_trip, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dask = export_lerobot(round_trip["source"], str(tmp_path / "dask"), fps=15, log=QUIET, pipeline_args=[
            "--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
    assert "DaskRunner" in dask.runner
    direct, other = tree_digest(round_trip["lerobot"]), tree_digest(Path(dask.lerobot_dir))
    assert set(direct) == set(other)
    assert {k for k in direct if direct[k] != other[k]} == {"meta/vlarft_export.json"}  # it names the runner


def test_export_refuses_an_existing_output_and_the_source_itself(round_trip, tmp_path):
    with pytest.raises(ConversionError, match="already exists"):
        export_lerobot(round_trip["source"], str(round_trip["lerobot"]), log=QUIET)
    with pytest.raises(ConversionError, match="overlaps the source"):
        export_lerobot(round_trip["source"], str(Path(round_trip["source"]) / "lerobot"), log=QUIET)
    assert (round_trip["lerobot"] / fmt.INFO_PATH).exists()


def test_statistics_merge_like_lerobot():
    a, b = np.arange(6.0).reshape(3, 2), np.asarray([[10.0, -1.0]])
    merged = fmt.aggregate_stats([fmt.feature_stats(a), fmt.feature_stats(b)])
    both = np.concatenate([a, b])
    np.testing.assert_allclose(merged["mean"], both.mean(0))
    np.testing.assert_allclose(merged["std"], both.std(0))
    np.testing.assert_array_equal(merged["min"], both.min(0))
    assert merged["count"].tolist() == [4]
    np.testing.assert_allclose(merged["q50"], (3 * np.median(a, 0) + b[0]) / 4)  # count-weighted, as lerobot
    image = fmt.feature_stats(np.full((2, 4, 4, 3), 255, np.uint8), visual=True)
    assert image["mean"].shape == (3, 1, 1) and image["max"].tolist() == [[[1.0]]] * 3
