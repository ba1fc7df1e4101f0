"""Versioned parameters through a real Reverb server (the path to actors on other machines)."""

import numpy as np

from vlarft.agents.parameters import ReverbParameterStore, params_table


def test_reverb_parameter_store_round_trip_keeps_only_the_newest():
    import reverb

    server = reverb.Server([params_table()])
    try:
        client = reverb.Client(f"localhost:{server.port}")
        template = {"dense": {"kernel": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}}
        store = ReverbParameterStore(client, template)
        assert store.latest() is None
        for version in (5, 7):
            store.durable[1] = version * 10
            store.publish({"dense": {"kernel": np.full((3, 2), version, np.float32),
                                     "bias": np.arange(2, dtype=np.float32)}}, version)
        latest = store.latest()
        assert latest.version == 7 and client.server_info()["params"].current_size == 1
        assert np.array_equal(latest.params["dense"]["kernel"], np.full((3, 2), 7, np.float32))
        assert np.array_equal(latest.params["dense"]["bias"], np.arange(2, dtype=np.float32))
        assert latest.durable_for(1) == 70 and latest.durable_for(0) == 0
        assert latest.incarnation == store.incarnation
        # A restarted learner (new store) is told apart by its incarnation.
        assert ReverbParameterStore(client, template).incarnation != store.incarnation
    finally:
        server.stop()
