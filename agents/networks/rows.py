"""Layers applied to many rows (the critic scoring B states x n actions), with their gradients
written the way XLA CPU computes fast (issue #11; figures in WORKSPACE, Speed).

Two costs of JAX's own gradients on a [rows, H] activation, each a large share of a Cal-QL update:

* Transposed copies. XLA CPU's dot needs, in memory, the contracted axis last in its left operand
  and first in its right one; for any other dot it first copies an operand transposed. A weight
  gradient contracts over the rows, so one operand is always copied transposed: the aim is to
  make that the small one. JAX's own gradient of `actions @ kernel` contracts the [rows, H]
  gradient as the left operand (`rows_matmul` transposes the [rows, I] input instead). Rows kept
  as two axes [B, n] (a two-axis contraction) and `nn.vmap` over ensemble members (batched dots)
  made the large copies too, so callers flatten the rows and apply members one by one.
* Column sums. The gradient of a parameter vector added to or multiplied into every row (a
  bias, LayerNorm's scale and bias) is a sum over the rows. XLA CPU splits such a sum into
  windows of 32 rows (`reduce-window`) and runs it as a scalar loop, ~0.3-0.5 ms for [7936, 128];
  the same sum as the matrix product ones[rows] @ g runs in ~0.13 ms (`column_sums`, for many
  rows: on few, or under `vmap`, the plain sum is as fast or faster).

`RowsDense` and `RowsLayerNorm` have the parameters and results of `dense` / `nn.LayerNorm`, so
checkpoints do not change.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlarft.agents.networks.common import xavier, zeros


# From this many rows up, `column_sums` computes the matrix product (WORKSPACE, Speed: a column
# sum of [N, 128] took 0.16 / 0.18 ms as a sum / a product at 2048 rows, 0.27 / 0.11 at 4096).
PRODUCT_MIN_ROWS = 4096


def column_sums(rows):
    """rows [..., H] summed over every leading axis; from `PRODUCT_MIN_ROWS` rows up, computed as
    the matrix product ones @ rows."""
    flat = rows.reshape(-1, rows.shape[-1])
    if flat.shape[0] < PRODUCT_MIN_ROWS:
        return jnp.sum(flat, axis=0)
    return jnp.ones(flat.shape[:1], flat.dtype) @ flat


@jax.custom_vjp
def rows_matmul(rows, kernel):
    """rows [..., I] @ kernel [I, O], for many rows and a small kernel. Its kernel gradient is
    computed as rows^T @ g: the small [rows, I] input is transposed, not the [rows, O] gradient."""
    return rows @ kernel


def _rows_matmul_fwd(rows, kernel):
    return rows @ kernel, (rows, kernel)


def _rows_matmul_bwd(saved, g):
    rows, kernel = saved
    flat_rows, flat_g = rows.reshape(-1, rows.shape[-1]), g.reshape(-1, g.shape[-1])
    return g @ kernel.T, flat_rows.T @ flat_g


rows_matmul.defvjp(_rows_matmul_fwd, _rows_matmul_bwd)


@jax.custom_vjp
def add_to_rows(rows, vector):
    """rows [..., H] + vector [H]; the vector's gradient is the `column_sums` of the rows' one."""
    return rows + vector


def _add_to_rows_fwd(rows, vector):
    return rows + vector, None


def _add_to_rows_bwd(_, g):
    return g, column_sums(g)


add_to_rows.defvjp(_add_to_rows_fwd, _add_to_rows_bwd)


@jax.custom_vjp
def scale_rows(rows, vector):
    """rows [..., H] * vector [H]; the vector's gradient is the `column_sums` of rows * g."""
    return rows * vector


def _scale_rows_fwd(rows, vector):
    return rows * vector, (rows, vector)


def _scale_rows_bwd(saved, g):
    rows, vector = saved
    return g * vector, column_sums(rows * g)


scale_rows.defvjp(_scale_rows_fwd, _scale_rows_bwd)


class RowsDense(nn.Module):
    """`dense(features)` on rows [N, I]: same parameters (kernel, bias) and result."""

    features: int

    @nn.compact
    def __call__(self, rows):
        kernel = self.param("kernel", xavier, (rows.shape[-1], self.features))
        bias = self.param("bias", zeros, (self.features,))
        return add_to_rows(rows @ kernel, bias)


class RowsLayerNorm(nn.Module):
    """`nn.LayerNorm()` on rows [N, H]: same parameters (scale, bias) and normalisation."""

    @nn.compact
    def __call__(self, rows):
        scale = self.param("scale", nn.initializers.ones, rows.shape[-1:])
        bias = self.param("bias", zeros, rows.shape[-1:])
        normalized = nn.LayerNorm(use_scale=False, use_bias=False, name="normalize")(rows)
        return add_to_rows(scale_rows(normalized, scale), bias)
