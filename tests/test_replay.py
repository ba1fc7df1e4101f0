"""Reverb replay on a real server and a real converted TFDS dataset: returns, writer round trip,
RLDS loading, mixed batches, checkpoints, dead servers, the online rate limiter, the CLI."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import SMALL_SPEC, make_episode, sample_all
from vlarft.agents.config import ReturnConfig
from vlarft.datasets.raw_episodes import write_raw_episode
from vlarft.datasets.reader import iterate_episodes
from vlarft.datasets.replay import (ReplayConfig, ReplayError, ReplayServer, TransitionWriter,
                                    connect, episode_returns, load_rlds_into_table,
                                    make_batch_iterator, mixed_counts, monte_carlo_returns,
                                    route_by_intervention, transition_signature)
from vlarft.datasets.replay.packing import StepLayout, transition_of_stored
from vlarft.datasets.replay.tables import signature_difference
from vlarft.datasets.replay.writer import rlds_steps
from vlarft.datasets.schema import EpisodeSpec, validate_episode
from vlarft.pipelines.convert_demos import convert

EMB_SPEC = EpisodeSpec(cameras=SMALL_SPEC.cameras, embedding_dim=8)
IMAGE_KEYS = ("image_front", "image_wrist", "state")
RETURNS = ReturnConfig(gamma=0.9, reward_scale=10.0, reward_bias=-1.0)


def embedded_episode(index: int) -> dict:
    """Episode `index`: 3 + index transitions, terminal when index is even, with embeddings."""
    episode = make_episode(f"ep{index}", length=3 + index, terminal=index % 2 == 0, seed=index)
    rng = np.random.default_rng(100 + index)
    episode["steps"]["embedding"] = rng.normal(size=(4 + index, 8)).astype(np.float32)
    return validate_episode(episode, EMB_SPEC)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_data")
    (root / "raw").mkdir()
    for i in range(5):
        write_raw_episode(root / "raw" / f"ep{i}.npz", embedded_episode(i), EMB_SPEC)
    result = convert([str(root / "raw")], str(root / "data"), "replay_demos",
                     validation_fraction=0.0, log=lambda msg: None)
    assert result.episodes == {"train": 5}
    return result.dataset_dir


def make_server(spec, keys, **overrides):
    config = dict(observation_keys=keys, min_size_online=1, samples_per_insert=1000.0)
    config.update(overrides)
    checkpoint_dir = config.pop("checkpoint_dir", None)
    return ReplayServer.from_config(ReplayConfig(**config), transition_signature(spec, keys),
                                    checkpoint_dir=checkpoint_dir)


def observation_of(steps, key, t):
    return steps["embedding"][t] if key == "embedding" else steps["observation"][key][t]


def expected_transitions(steps, keys, returns):
    """Transition t of an episode's columns, built by hand."""
    return [{"observation": {k: observation_of(steps, k, t) for k in keys},
             "next_observation": {k: observation_of(steps, k, t + 1) for k in keys},
             "action": steps["action"][t], "reward": steps["reward"][t],
             "discount": steps["discount"][t], "mc_return": returns[t],
             "intervention": steps["intervention"][t]}
            for t in range(len(steps["action"]) - 1)]


def state_key(state) -> bytes:
    return np.asarray(state, np.float32).tobytes()


def assert_same_transition(got, want):
    assert set(got) == set(want)
    for name in ("observation", "next_observation"):
        assert set(got[name]) == set(want[name])
        for key in want[name]:
            np.testing.assert_array_equal(got[name][key], want[name][key], err_msg=f"{name}/{key}")
    for name in ("action", "reward", "discount", "mc_return", "intervention"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def index_by_state(episodes, keys, returns_of):
    """state bytes of o_t -> (episode id, t, expected transition)."""
    index = {}
    for eid, steps in episodes.items():
        for t, transition in enumerate(expected_transitions(steps, keys, returns_of(steps))):
            index[state_key(transition["observation"]["state"])] = (eid, t, transition)
    return index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Monte-Carlo returns ------------------------------------------------------------------


def test_monte_carlo_returns_hand_computed():
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 1], True, 0.5), [0.25, 0.5, 1.0])
    # shaped rewards [-1, -1, 9]; a terminal ends at 0, a time-limit end continues at -1 forever.
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 1], True, 0.5, 10.0, -1.0), [0.75, 3.5, 9.0])
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 1], False, 0.5, 10.0, -1.0), [0.5, 3.0, 8.0])
    # without a bias both ends agree; a failed time-limit episode sits at bias / (1 - gamma).
    np.testing.assert_allclose(monte_carlo_returns([0, 1], False, 0.5), monte_carlo_returns([0, 1], True, 0.5))
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 0, 0], False, 0.9, 1.0, -0.05), [-0.5] * 4, rtol=1e-6)
    assert monte_carlo_returns([1, 0], True, 0.5).dtype == np.float32
    with pytest.raises(ValueError, match="diverges"):
        monte_carlo_returns([0, 0], False, 1.0, 1.0, -1.0)
    steps = make_episode(length=3, terminal=False)["steps"]  # rewards 0, time limit
    np.testing.assert_allclose(episode_returns(steps, RETURNS), [-10.0] * 3, rtol=1e-6)


# --- writer round trip ------------------------------------------------------------------------


def test_writer_round_trip_shares_next_observation_and_routes_interventions():
    episodes = {f"w{i}": make_episode(f"w{i}", length=4 + 2 * i, seed=10 + i)["steps"] for i in range(2)}
    with make_server(SMALL_SPEC, IMAGE_KEYS) as server:
        with TransitionWriter(server.client, route_by_intervention()) as writer:
            for steps in episodes.values():
                written = writer.write_episode(steps, IMAGE_KEYS, episode_returns(steps, RETURNS))
                assert written == len(steps["action"]) - 1
        total = sum(len(s["action"]) - 1 for s in episodes.values())
        interventions = sum(int(s["intervention"][:-1].sum()) for s in episodes.values())
        info = server.client.server_info()
        assert info["online"].current_size == total == writer.items_written["online"]
        assert info["demo"].current_size == interventions == writer.items_written["demo"] > 0

        index = index_by_state(episodes, IMAGE_KEYS, lambda s: episode_returns(s, RETURNS))
        by_position = {}
        for item in sample_all(server.client, "online", total):
            eid, t, want = index[state_key(item["observation"]["state"])]
            assert_same_transition(item, want)
            by_position[eid, t] = item
        assert len(by_position) == total
        for (eid, t), item in by_position.items():
            if (eid, t + 1) in by_position:  # s' of t is s of t + 1
                for key in IMAGE_KEYS:
                    np.testing.assert_array_equal(item["next_observation"][key],
                                                  by_position[eid, t + 1]["observation"][key])
        assert all(item["intervention"] for item in sample_all(server.client, "demo", interventions))


def test_next_observation_is_stored_once(tmp_path):
    """A checkpoint of 40 transitions over 41 incompressible frames holds ~41 frames, not 80."""
    spec, keys, n = EpisodeSpec(cameras={"front": (32, 32)}), ("image_front",), 40
    steps = make_episode("noise", length=n, spec=spec)["steps"]
    steps["observation"]["image_front"] = np.random.default_rng(0).integers(0, 256, (n + 1, 32, 32, 3), np.uint8)
    with make_server(spec, keys, checkpoint_dir=tmp_path) as server:
        with TransitionWriter(server.client, "demo") as writer:
            writer.write_episode(steps, keys, np.zeros(n, np.float32))
        checkpoint = Path(server.checkpoint())
    stored = sum(f.stat().st_size for f in checkpoint.iterdir())
    assert stored < 1.25 * steps["observation"]["image_front"].nbytes


# --- RLDS loading ----------------------------------------------------------------------------


def test_load_rlds_into_table_counts_returns_and_refusals(dataset_dir):
    keys = ("embedding", "image_front", "state")
    episodes = {ep["episode_metadata"]["episode_id"]: ep["steps"] for ep in iterate_episodes(dataset_dir)}
    with make_server(EMB_SPEC, keys) as server:
        stats = load_rlds_into_table(dataset_dir, "train", server.address, "demo", observation_keys=keys,
                                     return_config=RETURNS, progress=False)
        total = sum(3 + i for i in range(5))
        assert (stats["episodes"], stats["transitions"]) == (5, total)
        assert (stats["terminal_episodes"], stats["time_limit_episodes"]) == (3, 2)
        assert server.client.server_info()["demo"].current_size == total
        index = index_by_state(episodes, keys, lambda s: episode_returns(s, RETURNS))
        seen = set()
        for item in sample_all(server.client, "demo", total):
            eid, t, want = index[state_key(item["observation"]["state"])]
            assert_same_transition(item, want)  # mc_return == monte_carlo_returns of the episode
            seen.add((eid, t))
        assert len(seen) == total
        time_limit = episodes["ep1"]  # 4 transitions, reward 0: G = bias / (1 - gamma) = -10
        np.testing.assert_allclose(index[state_key(time_limit["observation"]["state"][0])][2]["mc_return"], -10.0,
                                   rtol=1e-5)

        with pytest.raises(ValueError, match=r"'image_side'.*replay_demos"):
            load_rlds_into_table(dataset_dir, "train", server.client, "demo",
                                 observation_keys=("image_side", "state"), progress=False)
        wrong = (r"table 'demo' .* takes next_observation/image_front: uint8\[16, 16, 3\], "
                 r"these items have next_observation/image_front: absent")
        with pytest.raises(ValueError, match=wrong):
            load_rlds_into_table(dataset_dir, "train", server.client, "demo",
                                 observation_keys=("embedding", "image_wrist", "state"), progress=False)


# --- mixed batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler_workers", [1, ReplayConfig.sampler_workers])
def test_mixed_batches_come_from_both_tables_in_ratio(sampler_workers):
    assert mixed_counts(32, 0.25) == {"online": 8, "demo": 24}
    assert list(mixed_counts(256, 0.5)) == ["online", "demo"]
    assert mixed_counts(32, 0.0) == {"demo": 32} and mixed_counts(32, 1.0) == {"online": 32}
    # UTD: 128 online rows per update x 2 updates per env step.
    assert ReplayConfig.for_training(256, 0.5, updates_per_env_step=2).samples_per_insert == 256
    with pytest.raises(ValueError, match="sampler_workers"):
        ReplayConfig(sampler_workers=0)
    keys = ("state",)
    online = make_episode("on", length=6, seed=1)["steps"]
    demo = make_episode("de", length=6, seed=2)["steps"]
    with make_server(SMALL_SPEC, keys) as server:
        for table, steps in (("online", online), ("demo", demo)):
            with TransitionWriter(server.client, table) as writer:
                writer.write_episode(steps, keys, episode_returns(steps, RETURNS))
        states = {table: {state_key(s) for s in steps["observation"]["state"][:-1]}
                  for table, steps in (("online", online), ("demo", demo))}
        with make_batch_iterator(server.address, mixed_counts(32, 0.25), sampler_workers=sampler_workers) as batches:
            assert batches.sources == ("online", "demo")
            for _ in range(3):
                batch = next(batches)
                assert isinstance(batch["source"], jax.Array) and batch["observation"]["state"].shape == (32, 19)
                source = np.asarray(batch["source"])
                assert source.tolist() == [0] * 8 + [1] * 24
                for row, state in zip(source, np.asarray(batch["observation"]["state"])):
                    assert state_key(state) in states[batches.sources[row]]


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_restores_into_a_new_server(tmp_path):
    keys = ("image_front", "state")
    steps = make_episode("ck", length=7, seed=3)["steps"]
    returns = episode_returns(steps, RETURNS)
    with make_server(SMALL_SPEC, keys, checkpoint_dir=tmp_path / "ckpt") as server:
        with TransitionWriter(server.client, route_by_intervention()) as writer:
            writer.write_episode(steps, keys, returns)
        before = {t: i.current_size for t, i in server.client.server_info().items()}
        path = server.checkpoint()
        assert path.startswith(str(tmp_path / "ckpt"))
    with make_server(SMALL_SPEC, keys, checkpoint_dir=tmp_path / "ckpt") as restored:
        assert {t: i.current_size for t, i in restored.client.server_info().items()} == before
        index = index_by_state({"ck": steps}, keys, lambda s: returns)
        for item in sample_all(restored.client, "online", before["online"]):
            assert_same_transition(item, index[state_key(item["observation"]["state"])][2])
    with make_server(SMALL_SPEC, keys) as plain, pytest.raises(ReplayError, match="no checkpoint_dir"):
        plain.checkpoint()
    # Reverb would silently restore the checkpointed tables over different ones.
    wrong = (r"ckpt holds table 'demo' with signature field next_observation/image_front "
             r"uint8\[16, 16, 3\], the new tables ask for absent")
    with pytest.raises(ReplayError, match=wrong):
        make_server(SMALL_SPEC, ("state",), checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(ReplayError, match=r"table 'demo' with max_size 1000000, the new tables ask for 10"):
        make_server(SMALL_SPEC, keys, checkpoint_dir=tmp_path / "ckpt", max_size_demo=10)


def test_reliable_writer_resends_what_a_restored_server_lacks(tmp_path):
    """A learner's server dies mid-episode after a checkpoint; the actor journals on; a server
    restored from the checkpoint gets exactly the missing transitions (the one across the resend
    point rebuilt from the journal), none twice."""
    import reverb

    from vlarft.datasets.replay import make_tables
    from vlarft.datasets.replay.reliable import ReliableWriter, progress_tables, read_progress

    keys, port = ("state",), free_port()
    config = ReplayConfig(observation_keys=keys, min_size_online=1, samples_per_insert=1000.0)
    tables = lambda: make_tables(config, transition_signature(SMALL_SPEC, keys)) + progress_tables(2)
    episodes = {f"e{i}": make_episode(f"e{i}", length=5, seed=40 + i)["steps"] for i in range(3)}
    records = [(step, t == len(steps["action"]) - 1) for steps in episodes.values()
               for t, step in enumerate(rlds_steps(steps, keys, episode_returns(steps, RETURNS)))]
    durable = {}
    server = ReplayServer(tables(), port=port, checkpoint_dir=tmp_path / "ckpt")
    writer = ReliableWriter(f"localhost:{port}", lambda c: TransitionWriter(c, route_by_intervention()),
                            actor_index=1, watermark=lambda client: durable["value"], retry_every_s=0.0)

    def send(upto):
        for step, ends in records[writer.records:upto]:
            writer.append(step)
            if ends:
                writer.end_episode()

    send(9)  # episode e0 (6 records) and 3 records of e1
    durable["value"] = read_progress(server.client, 2)[1].acknowledged  # what a learner reads before checkpointing
    assert durable["value"] == 9 and read_progress(server.client, 2)[0] is None
    server.checkpoint()
    send(11)  # acknowledged, but not in the checkpoint
    server.stop()  # the learner dies with its server
    send(12)  # journaled; the server is gone
    assert not writer.connected and writer.acknowledged == 11
    with ReplayServer(tables(), port=port, checkpoint_dir=tmp_path / "ckpt") as restored:
        send(len(records))
        writer.finish()
        assert writer.connected and writer.reconnects == 1 and writer.resent == 13 - 9  # records 9..12
        progress = read_progress(restored.client, 2)[1]
        assert progress.acknowledged == len(records) and progress.finished
        info = restored.client.server_info()
        expected = index_by_state(episodes, keys, lambda s: episode_returns(s, RETURNS))
        assert info["online"].current_size == len(expected) == 15
        seen = set()
        for item in sample_all(restored.client, "online", len(expected)):
            key = state_key(item["observation"]["state"])
            assert_same_transition(item, expected[key][2])
            seen.add(key)
        assert seen == set(expected)
        interventions = sum(int(s["intervention"][:-1].sum()) for s in episodes.values())
        assert info["demo"].current_size == interventions
    writer.trim(12)
    assert writer.base == 11 and writer.records == len(records)


# --- connection errors ---------------------------------------------------------------------------


def test_connect_to_a_dead_address_names_it_within_the_timeout():
    address = f"localhost:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ReplayError, match=address):
        connect(address, timeout_s=1.5)
    assert time.monotonic() - start < 2.0
    with make_server(SMALL_SPEC, ("state",)) as server:
        assert connect(server.address, timeout_s=2).server_info()["demo"].current_size == 0
        with pytest.raises(ReplayError, match=f"port {server.port}: already in use"):
            ReplayServer.from_config(ReplayConfig(observation_keys=("state",)),
                                     transition_signature(SMALL_SPEC, ("state",)), port=server.port)


def test_batches_from_a_dead_server_raise_naming_it():
    with make_server(SMALL_SPEC, ("state",)) as server:
        steps = make_episode("dead", length=3)["steps"]
        with TransitionWriter(server.client, "demo") as writer:
            writer.write_episode(steps, ("state",), np.zeros(3, np.float32))
        batches = make_batch_iterator(server.address, {"demo": 2}, prefetch=1, liveness_check_s=1.0)
        next(batches)
    # The server is gone: the learner gets an error naming it instead of waiting forever.
    with pytest.raises(ReplayError, match=server.address):
        for _ in range(1000):
            next(batches)
    batches.close()


# --- online rate limiter -----------------------------------------------------------------------------


def test_online_limiter_blocks_sampling_beyond_the_ratio():
    keys = ("state",)
    # 2 samples per insert; the learner may run 2 * 2 samples ahead of the actor.
    with make_server(SMALL_SPEC, keys, samples_per_insert=2.0, min_size_online=1) as server:
        writer = TransitionWriter(server.client, "online")

        def drain():
            with make_batch_iterator(server.address, {"online": 1}, rate_limiter_timeout_ms=300,
                                     prefetch=1) as batches:
                return sum(1 for _ in batches)

        steps = make_episode("rl", length=3, seed=4)["steps"]
        writer.write_episode(steps, keys, episode_returns(steps, RETURNS))
        # 3 inserts, 1 of them warm-up: (3 - 1) * 2 samples + 2 * 2 slack, then sampling times out.
        assert drain() == 8
        limiter = server.client.server_info()["online"].rate_limiter_info
        assert (limiter.sample_stats.completed, limiter.insert_stats.completed) == (8, 3)
        steps = make_episode("rl2", length=2, seed=5)["steps"]
        writer.write_episode(steps, keys, episode_returns(steps, RETURNS))
        assert drain() == 2 * 2  # two more env steps pay for exactly 4 more samples
        limiter = server.client.server_info()["online"].rate_limiter_info
        assert (limiter.sample_stats.completed, limiter.insert_stats.completed) == (12, 5)
        writer.close()


# --- command line -----------------------------------------------------------------------------


def test_cli_serves_and_checkpoints_on_sigterm(dataset_dir, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vlarft.datasets.replay", "serve", f"--port={port}",
                             f"--spec_from={dataset_dir}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
                             "--observation_keys=embedding,state", "--min_size_online=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first == f"localhost:{port}", proc.stderr.read() if proc.poll() is not None else first
        client = connect(f"localhost:{port}", timeout_s=10)
        stats = load_rlds_into_table(dataset_dir, "train", client, "online",
                                     observation_keys=("embedding", "state"), progress=False)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"checkpoint: {tmp_path / 'ckpt'}" in out
    signature = transition_signature(dataset_dir, ("embedding", "state"))
    config = ReplayConfig(observation_keys=("embedding", "state"), min_size_online=1)
    with ReplayServer.from_config(config, signature, checkpoint_dir=tmp_path / "ckpt") as restored:
        assert restored.client.server_info()["online"].current_size == stats["transitions"]


def test_packed_layout_round_trips_a_transition():
    keys = ("embedding", "image_front", "state")
    signature = transition_signature(EMB_SPEC, keys)
    layout = StepLayout.of_signature(signature)
    assert StepLayout.of_name(layout.name) == layout
    assert layout.width == EMB_SPEC.embedding_dim + 19 + 7 + 4  # embedding, state, action, 4 scalars
    assert set(layout.stored_signature()["columns"]) == {"image_front"}
    assert signature_difference(layout.transition_signature(), signature) is None
    assert transition_of_stored(layout.stored_signature()) == layout.transition_signature()
    steps = embedded_episode(0)["steps"]
    returns = np.arange(len(steps["action"]), dtype=np.float32)
    packed = [layout.pack_step(step) for step in rlds_steps(steps, keys, returns[:-1])]
    item = {"packed": np.stack([packed[2]["packed"], packed[3]["packed"]]),
            "columns": {"image_front": np.stack([p["columns"]["image_front"] for p in packed[2:4]])}}
    want = expected_transitions(steps, keys, returns)[2]
    got = layout.unpack(item)
    assert got["intervention"].dtype == bool
    assert_same_transition(got, want)
    batched = layout.unpack(jax.tree_util.tree_map(lambda x: np.stack([x, x]), item))  # leading batch axis
    np.testing.assert_array_equal(batched["next_observation"]["embedding"][1], want["next_observation"]["embedding"])
