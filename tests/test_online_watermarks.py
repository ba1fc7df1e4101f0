"""The durable-watermark protocol (read progress -> checkpoint -> publish) on a real Reverb server."""

import numpy as np

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
