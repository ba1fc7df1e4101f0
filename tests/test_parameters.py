"""Versioned parameters through a real Reverb server (the path to actors on other machines):
round trip, and what a client of the replay port can no longer forge."""

import os
import stat

import numpy as np
import pytest

from vlarft.agents.parameters import (Published, ReverbParameterStore, UntrustedPublication, _mac, learner_secret,
                                      params_table, read_secret)

SECRET = bytes(range(32))
TEMPLATE = {"dense": {"kernel": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)}}


@pytest.fixture
def client():
    import reverb

    server = reverb.Server([params_table()])
    try:
        yield reverb.Client(f"localhost:{server.port}")
    finally:
        server.stop()


def test_reverb_parameter_store_round_trip_keeps_only_the_newest(client):
    store = ReverbParameterStore(client, TEMPLATE, secret=SECRET)
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
    assert ReverbParameterStore(client, TEMPLATE, secret=SECRET).incarnation != store.incarnation


def forged_leaves(weight=1e6):
    return [np.full(2, weight, np.float32), np.full((3, 2), weight, np.float32)]  # bias, kernel (tree order)


def test_publications_not_signed_with_the_run_secret_are_refused(client):
    actor = ReverbParameterStore(client, TEMPLATE, secret=SECRET)
    durable = np.full(8, 10 ** 12, np.int64)
    # The forgery: huge weights, version 1e9, a new incarnation, watermark 1e12 ...
    client.insert(forged_leaves() + [np.int64(10 ** 9), np.int64(42), durable], {"params": 1.0})
    with pytest.raises(UntrustedPublication, match="fields"):
        actor.latest()
    # ... with a made-up MAC, or one made with another secret.
    for mac in (np.zeros(32, np.uint8), np.frombuffer(_mac(b"x" * 32, forged_leaves(), 10 ** 9, 42, durable), np.uint8)):
        client.insert(forged_leaves() + [np.int64(10 ** 9), np.int64(42), durable, mac.copy()], {"params": 1.0})
        with pytest.raises(UntrustedPublication, match="not signed with this run's parameter secret"):
            actor.latest()
    # Signed, but not finite (a learner that diverged, or a leaked secret): refused too.
    nan = forged_leaves(np.nan)
    mac = np.frombuffer(_mac(SECRET, nan, 3, 42, np.zeros(8, np.int64)), np.uint8)
    client.insert(nan + [np.int64(3), np.int64(42), np.zeros(8, np.int64), mac.copy()], {"params": 1.0})
    with pytest.raises(UntrustedPublication, match="non-finite"):
        actor.latest()
    learner = ReverbParameterStore(client, TEMPLATE, secret=SECRET)
    with pytest.raises(ValueError, match="non-finite"):
        learner.publish({"dense": {"kernel": np.full((3, 2), np.nan, np.float32), "bias": np.zeros(2, np.float32)}}, 4)
    learner.publish(TEMPLATE, 5)
    assert actor.latest().version == 5  # the genuine one replaces the forgeries


def test_a_watermark_beyond_what_the_actor_wrote_is_refused():
    published = Published(TEMPLATE, version=3, incarnation=1, durable=np.array([10, 10 ** 12], np.int64))
    published.check_watermark(0, written=10)
    with pytest.raises(UntrustedPublication, match="claims 1000000000000 durable steps of actor 1, which has written 50"):
        published.check_watermark(1, written=50)


def test_the_run_secret_is_private_to_its_owner(tmp_path):
    secret = learner_secret(tmp_path / "run")
    path = tmp_path / "run" / "params_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(secret) == 32
    assert learner_secret(tmp_path / "run") == secret  # a resumed run keeps it
    copy = tmp_path / "actor_copy"
    copy.write_text(path.read_text())
    os.chmod(copy, 0o644)
    with pytest.raises(ValueError, match=f"{copy} is accessible by other users .*chmod 600"):
        read_secret(copy)
    os.chmod(copy, 0o600)
    assert read_secret(copy) == secret
    copy.write_text("not hex")
    with pytest.raises(ValueError, match="64 hex digits"):
        read_secret(copy)
    with pytest.raises(ValueError, match="cannot read it"):
        read_secret(tmp_path / "missing")


def test_the_actor_keeps_its_trusted_parameters_when_a_forgery_replaces_them(client):
    import threading
    import time

    from vlarft.agents.online.actor import ParameterPoller

    ReverbParameterStore(client, TEMPLATE, secret=SECRET).publish(TEMPLATE, 1)
    stop = threading.Event()
    poller = ParameterPoller(ReverbParameterStore(client, TEMPLATE, secret=SECRET), lambda: client, stop, period_s=0.01)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while poller.latest is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poller.latest.version == 1
        mac = np.zeros(32, np.uint8)
        client.insert(forged_leaves() + [np.int64(10 ** 9), np.int64(42), np.full(8, 10 ** 12, np.int64), mac],
                      {"params": 1.0})  # the one-item table now holds only the forgery
        while poller.rejected == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poller.rejected >= 1 and poller.latest.version == 1  # refused, counted; the robot acts on
    finally:
        stop.set()
        poller.join()
