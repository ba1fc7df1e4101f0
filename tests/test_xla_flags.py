"""The XLA flags the command lines turn on: added only where the user did not set them, and known
to this XLA (it aborts the process on an unknown flag in XLA_FLAGS)."""

import os
import subprocess
import sys

from vlarft.agents.process_settings import use_process_settings
from vlarft.agents.xla_flags import DEFAULT_FLAGS, use_default_xla_flags

FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"


def test_adds_the_defaults_and_keeps_the_users_flags():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert use_default_xla_flags(environ) == [f"--{FLAG}=true"]
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 --{FLAG}=true"
    assert use_default_xla_flags(environ) == []  # a second call adds nothing
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 --{FLAG}=true"

    empty = {}
    use_default_xla_flags(empty)
    assert empty == {"XLA_FLAGS": f"--{FLAG}=true"} and DEFAULT_FLAGS == {FLAG: "true"}


def test_the_users_own_setting_wins():
    for setting in (f"--{FLAG}=false", f"-{FLAG}=false", f"  --{FLAG}=false  "):
        environ = {"XLA_FLAGS": setting}
        assert use_default_xla_flags(environ) == []
        assert environ["XLA_FLAGS"] == setting


def test_process_settings_add_the_flags_and_honour_the_allocator_switch():
    environ = {"VLARFT_KEEP_FREED_MEMORY": "0"}  # no allocator change in the tests' process
    assert use_process_settings(environ) == {"xla_flags": [f"--{FLAG}=true"], "keep_freed_memory": False}
    assert environ["XLA_FLAGS"] == f"--{FLAG}=true"


def test_this_xla_knows_the_flags():
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    program = ("from vlarft.agents.xla_flags import use_default_xla_flags; print(use_default_xla_flags()); "
               "import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: (x @ x).sum())(jnp.eye(4))))")
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "4.0", result.stdout
    assert f"--{FLAG}=true" in result.stdout
