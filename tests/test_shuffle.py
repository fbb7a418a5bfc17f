"""rltune.shuffle: jax.random.permutation's exact permutation, by one-operand sorts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltune.shuffle import permutation, stable_argsort


@pytest.mark.parametrize("n", [1, 2, 7, 512, 2049])  # 2049: two rounds of JAX's shuffle
def test_same_permutation_as_jax(n):
    permute = jax.jit(permutation, static_argnums=1)
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        np.testing.assert_array_equal(np.asarray(permute(key, n)), np.asarray(jax.random.permutation(key, n)))


def test_same_permutation_as_jax_under_vmap():
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    ours = jax.jit(jax.vmap(lambda k: permutation(k, 512)))(keys)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(jax.vmap(lambda k: jax.random.permutation(k, 512))(keys)))


@pytest.mark.parametrize("n", [5, 512, 3000, 70_000])  # 70,000: three radix passes
def test_stable_argsort_keeps_ties_in_index_order(n):
    rng = np.random.default_rng(n)
    # few distinct keys (ties everywhere), differing in their low and high bits
    keys = rng.integers(0, 8, n).astype(np.uint32) * np.uint32(0x10000001)
    ours = np.asarray(jax.jit(stable_argsort)(jnp.asarray(keys)))
    np.testing.assert_array_equal(ours, np.argsort(keys, kind="stable"))
    full = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)  # the whole 32-bit range
    np.testing.assert_array_equal(np.asarray(stable_argsort(jnp.asarray(full))), np.argsort(full, kind="stable"))
