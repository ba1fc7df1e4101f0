"""The actor's control timing: steady_control's interpreter settings and the pause record."""

import gc
import sys
import weakref

import pytest

from vlarft.robot_io import control_timing
from vlarft.robot_io.control_timing import SWITCH_INTERVAL_S, ControlPauses, steady_control


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the collector's passes can free it


def test_steady_control_freezes_the_live_heap_and_shortens_the_switch_interval_until_the_last_block_exits():
    before = sys.getswitchinterval()
    assert gc.get_freeze_count() == 0
    alive = [Node() for _ in range(1000)]
    with steady_control():
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        frozen = gc.get_freeze_count()
        assert frozen > len(alive)
        tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not any(id(node) in tracked for node in alive)  # out of every generation's pass
        with steady_control():  # a second actor (or a nested block) in the same process: no second freeze
            assert gc.get_freeze_count() <= frozen  # (frozen objects that die leave the count)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # the outer block still holds
        assert gc.get_freeze_count() > len(alive)
        tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not any(id(node) in tracked for node in alive)
    assert sys.getswitchinterval() == pytest.approx(before)
    assert gc.get_freeze_count() == 0
    assert any(id(node) in {id(o) for o in gc.get_objects(2)} for node in alive)  # back under the collector


def test_garbage_frozen_with_the_heap_is_collected_after_the_block():
    garbage = Node()
    ref = weakref.ref(garbage)
    del garbage  # a reference cycle: alive until a collector's pass finds it
    with steady_control():
        gc.collect()
        assert ref() is not None  # frozen: out of the passes' reach while the loop runs
    gc.collect()
    assert ref() is None  # collectable again once the block is left


def test_steady_control_restores_the_interpreter_when_the_actor_fails():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError, match="robot"):
        with steady_control():
            raise RuntimeError("robot stopped answering")
    assert sys.getswitchinterval() == pytest.approx(before) and gc.get_freeze_count() == 0


def test_control_pauses_time_each_observation_to_the_next_action(monkeypatch):
    clock = iter([10.0, 10.010, 10.5, 10.520, 11.0, 11.030, 12.0, 12.040])
    monkeypatch.setattr(control_timing.time, "monotonic", lambda: next(clock))
    pauses = ControlPauses()
    assert pauses.summary() == {"pauses": 0}
    pauses.acting()  # no observation yet: nothing to time (and no clock read)
    for _ in range(4):
        pauses.observed()
        pauses.acting()
    pauses.acting()  # a second action on the same observation is not a new pause
    summary = pauses.summary()
    assert summary["pauses"] == 4
    assert summary["median_ms"] == pytest.approx(25.0)  # of 10, 20, 30, 40 ms
    assert summary["p99_ms"] == pytest.approx(39.7)  # numpy's linear interpolation: 30 + 0.97 * 10
    assert summary["max_ms"] == pytest.approx(40.0)
