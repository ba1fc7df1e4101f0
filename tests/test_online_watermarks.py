"""The durable-watermark protocol (read progress -> checkpoint -> publish) on a real Reverb server."""

import time

import numpy as np
import pytest

from vlarft.agents.online.watermarks import DurableSaver
from vlarft.agents.parameters import ReverbParameterStore, params_table
from vlarft.datasets.replay.reliable import progress_table_name, progress_tables
from vlarft.datasets.replay.tables import ReplayServer

PARAMS = {"w": np.ones(3, np.float32)}
SECRET = b"s" * 32


def write_progress(client, slot, acknowledged, finished, incarnation):
    client.insert([np.int64(acknowledged), np.int64(finished), np.int64(incarnation)],
                  {progress_table_name(slot): 1.0})


def test_watermarks_are_read_before_the_checkpoint_and_published_after_it():
    with ReplayServer([params_table()] + progress_tables(3)) as server:
        client = server.client
        store = ReverbParameterStore(client, PARAMS, max_actors=3, secret=SECRET)
        events = []

        def checkpoint(state):
            # The progress was read before this point: a step acknowledged now is not counted ...
            write_progress(client, 0, 99, False, store.incarnation)
            published = store.latest()
            events.append(("checkpoint", state, None if published is None else published.durable.tolist()))

        saver = DurableSaver(client, store, checkpoint, max_actors=3)
        write_progress(client, 0, 10, False, store.incarnation)
        write_progress(client, 1, 7, False, 12345)  # another learner's incarnation: not trusted
        durable = saver.save("state-1", PARAMS, version=5)
        assert durable.tolist() == [10, 0, 0]
        # ... and nothing was published before the checkpoint finished.
        assert events == [("checkpoint", "state-1", None)]
        published = store.latest()
        assert published.version == 5 and published.durable.tolist() == [10, 0, 0]
        # Next round: slot 0 now counts the 99 acknowledged during the last checkpoint; slot 1
        # keeps its previous watermark as long as its progress carries a foreign incarnation.
        store.durable = np.array([10, 4, 0], np.int64)
        assert saver.save("state-2", PARAMS, version=6).tolist() == [99, 4, 0]


def test_actors_finished_needs_every_reporting_actor_finished_for_this_learner():
    with ReplayServer([params_table()] + progress_tables(3)) as server:
        client = server.client
        store = ReverbParameterStore(client, PARAMS, max_actors=3, secret=SECRET)
        saver = DurableSaver(client, store, lambda state: None, max_actors=3)
        assert not saver.actors_finished()  # nobody reported yet
        write_progress(client, 0, 10, True, store.incarnation)
        write_progress(client, 2, 5, False, store.incarnation)
        assert not saver.actors_finished()
        write_progress(client, 2, 6, True, 777)  # finished, but for another learner
        assert not saver.actors_finished()
        write_progress(client, 2, 6, True, store.incarnation)
        assert saver.actors_finished()


def test_actor_slots_are_claimed_refused_while_live_and_taken_over_when_stale():
    from vlarft.datasets.replay.slots import SlotClaim, SlotInUse, claim_tables, slot_count

    with ReplayServer(progress_tables(3) + claim_tables(3)) as server:
        assert slot_count(server.client) == 3
        first = SlotClaim(server.address, 1, heartbeat_s=0.2, lease_s=1.0).acquire(server.client)
        with pytest.raises(SlotInUse, match=r"actor slot 1 of the learner at .* is in use by another live actor"):
            SlotClaim(server.address, 1, heartbeat_s=0.2, lease_s=1.0).acquire(server.client)
        with pytest.raises(ValueError, match=r"--actor_index=3: the learner at .* offers actor slots 0\.\.2"):
            SlotClaim(server.address, 3).acquire(server.client)
        SlotClaim(server.address, 2, heartbeat_s=0.2, lease_s=1.0).acquire(server.client).release()  # another slot
        first._stop.set()  # its actor dies: no more renewals, no release
        first._thread.join()
        started = time.monotonic()
        second = SlotClaim(server.address, 1, heartbeat_s=0.2, lease_s=1.0).acquire(server.client)  # stale: taken
        assert 0.9 < time.monotonic() - started < 5
        second.release()  # released: the next actor takes it at once
        started = time.monotonic()
        SlotClaim(server.address, 1, heartbeat_s=0.2, lease_s=1.0).acquire(server.client).release()
        assert time.monotonic() - started < 0.9


def test_progress_carries_the_actors_collection_figures():
    from vlarft.datasets.replay.reliable import CollectionStats, read_progress

    with ReplayServer(progress_tables(2)) as server:
        write_progress(server.client, 0, 10, False, 5)  # an actor of an older version: no figures
        server.client.insert([np.int64(21), np.int64(1), np.int64(5), np.int64(60), np.int64(20), np.int64(2),
                              np.int64(15), np.float64(4.0)], {progress_table_name(1): 1.0})
        old, new = read_progress(server.client, 2)
        assert old.stats is None and new.acknowledged == 21 and new.finished
        assert new.stats == CollectionStats(env_steps=60, run_steps=20, episodes=2, intervention_steps=15, run_s=4.0)
        assert new.stats.as_dict()["steps_per_s"] == 5.0 and new.stats.as_dict()["intervention_rate"] == 0.75
