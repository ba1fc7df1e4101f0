"""What an unauthenticated client of the replay port can no longer do: NaN transitions never
reach a learner batch (a real Reverb server, a hostile writer)."""

import numpy as np

from conftest import SMALL_SPEC, make_episode
from vlarft.agents.config import ReturnConfig
from vlarft.datasets.replay import (ReplayConfig, ReplayServer, TransitionWriter, episode_returns,
                                    make_batch_iterator, transition_signature)

KEYS = ("state",)
RETURNS = ReturnConfig(gamma=0.9)


def test_non_finite_transitions_are_dropped_counted_and_deleted_before_a_batch():
    config = ReplayConfig(observation_keys=KEYS, min_size_online=1, samples_per_insert=1000.0)
    good = make_episode("good", length=10, seed=1)["steps"]
    poisoned = make_episode("nan", length=3, seed=2)["steps"]  # what a hostile client writes
    poisoned["reward"][:] = np.nan
    poisoned["observation"]["state"][1] = np.inf
    with ReplayServer.from_config(config, transition_signature(SMALL_SPEC, KEYS)) as server:
        for steps in (good, poisoned):
            with TransitionWriter(server.client, "demo") as writer:
                writer.write_episode(steps, KEYS, episode_returns(steps, RETURNS))
        assert server.client.server_info()["demo"].current_size == 13
        with make_batch_iterator(server.address, {"demo": 4}) as batches:
            for _ in range(40):
                batch = next(batches)
                for leaf in (batch["reward"], batch["observation"]["state"], batch["next_observation"]["state"]):
                    assert np.all(np.isfinite(np.asarray(leaf)))
                assert "key" not in batch
            dropped = batches.dropped_non_finite
        assert list(dropped) == ["demo"] and dropped["demo"] >= 3  # rows dropped (a row sampled twice counts twice)
        assert server.client.server_info()["demo"].current_size == 10  # all three deleted once seen


def test_the_standalone_server_reports_an_unwritable_checkpoint_dir_as_an_error_line(tmp_path, capsys):
    from vlarft.datasets.raw_episodes import write_raw_episode
    from vlarft.datasets.replay.__main__ import main
    from vlarft.pipelines.convert_demos import convert

    (tmp_path / "raw").mkdir()
    write_raw_episode(tmp_path / "raw" / "ep.npz", make_episode("ep"), SMALL_SPEC)
    dataset = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "d", log=lambda m: None).dataset_dir
    (tmp_path / "a_file").write_text("not a directory")
    assert main(["serve", f"--spec_from={dataset}", "--observation_keys=state",
                 f"--checkpoint_dir={tmp_path / 'a_file' / 'ckpt'}"]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "a_file/ckpt" in err and "Traceback" not in err
