"""The Beam jobs on a `dask.distributed` cluster started as a user would (`dask scheduler` + two
`dask worker` processes, `tools/dask_cluster.py`): conversion and embedding write what the
DirectRunner writes (byte-identical TFRecord shards for the conversion; for the embedding the
same files, episodes and fields, the embeddings equal to float tolerance)."""

from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET, SMALL_SPEC, make_episode
from vlarft.agents import training
from vlarft.agents.config import get_config
from vlarft.datasets.raw_episodes import write_raw_episode
from vlarft.datasets.reader import iterate_episodes
from vlarft.datasets.schema import flatten
from vlarft.pipelines.convert_demos import convert
from vlarft.pipelines.embed_dataset import embed_dataset
from vlarft.tools.dask_cluster import process_cluster


def shards(dataset_dir: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(dataset_dir).glob("*.tfrecord*"))}


def episodes_by_id(dataset_dir: str, split: str) -> dict[str, dict]:
    return {e["episode_metadata"]["episode_id"]: flatten(e["steps"]) for e in iterate_episodes(dataset_dir, split)}


@pytest.mark.timeout(900)
def test_conversion_and_embedding_on_a_process_cluster_match_the_direct_runner(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(6):
        write_raw_episode(raw / f"ep{i:02d}.npz", make_episode(episode_id=f"ep{i:02d}", length=3 + i, seed=i),
                          SMALL_SPEC)
    direct = convert([str(raw)], str(tmp_path / "direct"), "demo", num_shards=2, validation_fraction=0.3, log=QUIET)
    options = training.StageOptions(dataset_dir=direct.dataset_dir, workdir=str(tmp_path / "sft"), steps=0,
                                    eval_episodes=0, show_progress=False)
    training.run_sft(options, get_config("tiny"))  # an untrained policy export: the embedding job needs one
    embedded = embed_dataset(direct.dataset_dir, str(tmp_path / "sft"), str(tmp_path / "direct"), log=QUIET)
    with process_cluster(workers=2, log_dir=str(tmp_path)) as cluster:
        assert len(cluster.worker_pids()) == 2 and cluster.scheduler.poll() is None
        on_dask = convert([str(raw)], str(tmp_path / "dask"), "demo", num_shards=2, validation_fraction=0.3,
                          log=QUIET, pipeline_args=cluster.runner_args())
        embedded_on_dask = embed_dataset(on_dask.dataset_dir, str(tmp_path / "sft"), str(tmp_path / "dask"),
                                         log=QUIET, pipeline_args=cluster.runner_args())
    assert "DaskRunner" in on_dask.runner and "DaskRunner" in embedded_on_dask.runner
    assert on_dask.episodes == direct.episodes and shards(on_dask.dataset_dir) == shards(direct.dataset_dir)
    assert set(shards(embedded_on_dask.dataset_dir)) == set(shards(embedded.dataset_dir))
    assert embedded_on_dask.episodes == embedded.episodes
    for split in embedded.episodes:
        want, got = episodes_by_id(embedded.dataset_dir, split), episodes_by_id(embedded_on_dask.dataset_dir, split)
        assert set(want) == set(got)
        for episode_id, steps in want.items():
            assert set(steps) == set(got[episode_id])
            for key, value in steps.items():
                if key == "embedding":
                    np.testing.assert_allclose(got[episode_id][key], value, rtol=1e-5, atol=1e-5)
                else:
                    np.testing.assert_array_equal(got[episode_id][key], value, err_msg=f"{episode_id} {key}")
