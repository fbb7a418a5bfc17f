"""`jax.random.permutation(key, n)`, the same permutation for the same key, about 2.5x faster on CPU.

JAX shuffles by a stable sort of random 32-bit keys carrying the indices along: a two-operand
sort, which XLA:CPU runs with a comparator called through a function pointer (873 us for a
population of 16 permutations of 512 on one core; PPO takes one per epoch: 12 % of a PPO
CartPole update). A one-operand sort of uint32 runs on XLA's fast path (164 us for the same).

So the stable sort by (key, index) becomes a least-significant-digit radix sort of one-operand
sorts: each pass packs a digit of the key above the element's current position into one uint32
and sorts that. Positions are distinct, so every packed value is, and a pass orders by its digit
with ties in the previous pass's order: after the low digit and then the high digit, the order
is by the whole key, ties by index, which is exactly the stable sort's. The rounds, the key
splits and the random bits are JAX's own (jax/_src/random: `_shuffle`), so the result is
bit-identical to `jax.random.permutation` (tests/test_shuffle.py checks it, ties included).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

_KEY_BITS = 32


def permutation(key, n: int) -> jnp.ndarray:
    """A permutation of range(n): `jax.random.permutation(key, n)` computed faster."""
    x = jnp.arange(n, dtype=jnp.int32)
    for _ in range(_rounds(n)):
        key, subkey = jax.random.split(key)
        x = x[stable_argsort(jax.random.bits(subkey, (n,), jnp.uint32))]
    return x


def _rounds(n: int) -> int:
    """JAX's stop rule: enough sorts by fresh 32-bit keys that collisions stop mattering."""
    exponent = 3
    return int(np.ceil(exponent * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))


def stable_argsort(keys: jnp.ndarray) -> jnp.ndarray:
    """The indices that sort a 1-D uint32 array, equal keys in index order."""
    n = keys.shape[0]
    index_bits = max(1, (n - 1).bit_length())  # bits of the largest position, n - 1
    if index_bits >= _KEY_BITS:
        raise ValueError(f"cannot sort {n} keys with 32-bit packing")
    digit_bits = _KEY_BITS - index_bits
    order = jnp.arange(n, dtype=jnp.uint32)  # order[p]: the element at position p so far
    for shift in range(0, _KEY_BITS, digit_bits):
        digit = (keys[order] >> shift) & np.uint32((1 << min(digit_bits, _KEY_BITS - shift)) - 1)
        packed = (digit << index_bits) | jnp.arange(n, dtype=jnp.uint32)
        position = jax.lax.sort(packed) & np.uint32((1 << index_bits) - 1)
        order = order[position]
    return order.astype(jnp.int32)
