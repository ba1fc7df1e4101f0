"""Ctrl-C and SIGTERM held back until a block ends (`robot_io/interrupts.py`): a checkpoint is
never cut short, and a Ctrl-C during a simulator render stops the caller with KeyboardInterrupt
once the render is done (inside EGL's ctypes calls it surfaced as a ctypes.ArgumentError)."""

import os
import signal

import vlarft.robot_io.sim  # noqa: F401  (first: selects headless EGL before mujoco is imported)

import numpy as np
import pytest

from vlarft.robot_io.interrupts import interrupts_deferred
from vlarft.robot_io.sim import SimConfig, SimRobotEnv


def test_interrupts_during_a_checkpoint_take_effect_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():  # nested: the outer block decides
                os.kill(os.getpid(), signal.SIGTERM)  # default action: terminate -> KeyboardInterrupt
                done.append("inner")
            done.append("outer")
    assert done == ["inner", "outer"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_held_signal_goes_to_its_own_handler_and_an_ignored_one_stays_ignored():
    called = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: called.append(signum))
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_deferred(python_handlers_only=True):
            os.kill(os.getpid(), signal.SIGTERM)
            assert called == []  # held inside the block
        assert called == [signal.SIGTERM]
        with interrupts_deferred():  # SIGINT ignored before the block: still ignored after it
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, ignored)


def test_ctrl_c_during_a_render_is_a_keyboard_interrupt_after_both_cameras_rendered(monkeypatch):
    env = SimRobotEnv(SimConfig(task="pick_cube", image_size=(16, 16)))
    try:
        env.reset(seed=0)
        renders = []
        real_render = env._render_camera

        def render_then_ctrl_c(camera):  # the signal arrives while the first camera is rendered
            renders.append(camera)
            if len(renders) == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return real_render(camera)

        monkeypatch.setattr(env, "_render_camera", render_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            env.step(np.zeros(env.action_space.shape, np.float32))
        assert len(renders) == 2  # the render was not cut short
        monkeypatch.undo()
        observation, *_ = env.step(np.zeros(env.action_space.shape, np.float32))  # the renderer still works
        assert observation["image_front"].shape == (16, 16, 3) and observation["image_front"].any()
    finally:
        env.close()
