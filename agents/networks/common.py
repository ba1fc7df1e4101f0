"""Building blocks shared by the head, the critic and the backbone, plus parameter-file helpers."""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def dense(features: int, name: str | None = None) -> nn.Dense:
    """Dense layer with Xavier-uniform kernel and zero bias (the default everywhere here)."""
    return nn.Dense(features, kernel_init=xavier, bias_init=zeros, name=name)


class MLP(nn.Module):
    """Dense -> LayerNorm -> tanh per hidden size (after the last one too if `activate_final`)."""

    hidden: Sequence[int]
    activate_final: bool = True

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden):
            x = dense(size)(x)
            if i + 1 < len(self.hidden) or self.activate_final:
                x = jnp.tanh(nn.LayerNorm()(x))
        return x


class ProprioProjection(nn.Module):
    """Proprio state -> Dense(features) -> LayerNorm -> tanh."""

    features: int

    @nn.compact
    def __call__(self, state):
        return jnp.tanh(nn.LayerNorm()(dense(self.features)(state)))


def broadcast_features(features, lead_shape: tuple[int, ...]):
    """Broadcasts features [*obs_lead, D] to [*lead_shape, D], adding the missing trailing axes.

    Used to tile one observation encoding over n actions ([B, D] -> [B, n, D]) without re-encoding.
    """
    extra = len(lead_shape) - (features.ndim - 1)
    if extra < 0:
        raise ValueError(f"features {features.shape} have more leading axes than {lead_shape}")
    features = features.reshape(features.shape[:-1] + (1,) * extra + features.shape[-1:])
    return jnp.broadcast_to(features, tuple(lead_shape) + features.shape[-1:])


# ---------------------------------------------------------------- parameter files


def save_tree(tree: Any, path: str | os.PathLike) -> None:
    """Writes a nested dict of arrays: `.npz` ('/'-joined keys) or flax msgpack (anything else).

    The file is written to a temporary name and renamed, so readers never see half a file.
    """
    path = os.fspath(path)
    tree = jax.device_get(flax.core.unfreeze(tree))
    tmp = f"{path}.tmp-{os.getpid()}"
    if path.endswith(".npz"):
        flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}
        with open(tmp, "wb") as f:
            np.savez(f, **flat)
    else:
        with open(tmp, "wb") as f:
            f.write(flax.serialization.msgpack_serialize(tree))
    os.replace(tmp, path)


def load_tree(path: str | os.PathLike) -> dict:
    """Reads a file written by `save_tree` (or any flax msgpack / '/'-keyed npz of arrays)."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path) as data:
            return traverse_util.unflatten_dict({tuple(k.split("/")): data[k] for k in data.files})
    with open(path, "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def check_tree(loaded: Any, target: Any, what: str) -> dict:
    """Checks `loaded` has exactly the paths and shapes of `target`; returns it cast to target dtypes.

    `target` may hold arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`). Raises
    ValueError naming the first offending parameter path.
    """
    got = traverse_util.flatten_dict(flax.core.unfreeze(loaded))
    want = traverse_util.flatten_dict(flax.core.unfreeze(target))
    missing = sorted("/".join(k) for k in want.keys() - got.keys())
    extra = sorted("/".join(k) for k in got.keys() - want.keys())
    if missing:
        raise ValueError(f"{what}: parameter {missing[0]!r} is missing from the file "
                         f"({len(missing)} missing in all)")
    if extra:
        raise ValueError(f"{what}: the file has unexpected parameter {extra[0]!r} "
                         f"({len(extra)} unexpected in all)")
    out = {}
    for key, spec in want.items():
        value = np.asarray(got[key])
        if tuple(value.shape) != tuple(spec.shape):
            raise ValueError(f"{what}: parameter {'/'.join(key)!r} has shape {tuple(value.shape)} in the "
                             f"file, the model expects {tuple(spec.shape)}")
        out[key] = jnp.asarray(value, dtype=spec.dtype)
    return traverse_util.unflatten_dict(out)
