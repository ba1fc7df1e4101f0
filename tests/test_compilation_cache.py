"""The persistent compilation cache: a second process loads the first one's programs instead of
compiling them, gives the same results, and the cache folder must be private."""

import os
import subprocess
import sys
from pathlib import Path

import jax
from vlarft.agents import compilation_cache

# Compiles two programs and prints their results; JAX_LOG_COMPILES makes JAX log cache hits as warnings.
PROGRAM = """
import jax, jax.numpy as jnp
from vlarft.agents.compilation_cache import enable_compilation_cache
print(enable_compilation_cache())
def slow_to_compile(x):  # unrolled: ~0.5 s of XLA on a 2-core CPU, over MIN_COMPILE_S
    for i in range(16):
        x = jnp.tanh(x @ x.T + i) * jnp.sin(x) + jnp.cumsum(x, axis=0)
    return jnp.sum(x ** 2)
def quick_to_compile(x):  # ~15 ms: under MIN_COMPILE_S, never written
    return x * 3.0
x = jnp.arange(64.0).reshape(8, 8) / 64
print(repr(jax.jit(jax.grad(slow_to_compile))(x).tolist()), repr(jax.jit(quick_to_compile)(x).tolist()))
"""


def run_program(setting: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_LOG_COMPILES="1", **{compilation_cache.ENV: setting})
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_a_second_process_loads_the_program_and_gets_the_same_result(tmp_path):
    cache = tmp_path / "xla"
    first, second = run_program(str(cache)), run_program(str(cache))
    assert first.stdout.splitlines()[0] == str(cache)
    assert "Persistent compilation cache hit" not in first.stderr
    assert "Persistent compilation cache hit" in second.stderr
    assert first.stdout == second.stdout  # same folder, same numbers
    assert (cache.stat().st_mode & 0o777) == 0o700
    written = [p.name for p in cache.iterdir() if p.name.endswith("-cache")]
    assert len(written) == 1 and written[0].startswith("jit_slow_to_compile-"), written  # not the quick one


def test_off_compiles_without_a_cache(tmp_path):
    off = run_program("off")
    assert off.stdout.splitlines()[0] == "None"
    assert "Persistent compilation cache hit" not in off.stderr


def test_a_folder_others_can_write_is_refused(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    before = jax.config.jax_compilation_cache_dir
    assert compilation_cache.enable_compilation_cache(shared) is None
    assert jax.config.jax_compilation_cache_dir == before  # left as it was
    assert f"{shared} is writable by group or others" in capsys.readouterr().err


def test_the_default_folder_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert compilation_cache.default_cache_dir() == tmp_path / "c" / "vlarft" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compilation_cache.default_cache_dir() == Path.home() / ".cache" / "vlarft" / "xla"
