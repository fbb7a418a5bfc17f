"""The unrolled CPU lowering of JAX's threefry hash: the same bits as JAX's loop, no loop."""

import re
from functools import partial

import jax
import numpy as np

from rltune import threefry_cpu

# Random123's known-answer vectors for threefry2x32 with 20 rounds: (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


def _loops(compiled_text: str) -> int:
    return len(re.findall(r" while\(", compiled_text))


@jax.jit
def _hash(k1, k2, x1, x2):
    from jax._src.random.threefry2x32 import threefry2x32_p

    return threefry2x32_p.bind(k1, k2, x1, x2)


def test_unrolled_lowering_gives_the_known_answers_without_a_loop():
    assert threefry_cpu.use_unrolled()  # idempotent: rltune.agents registers it on import
    for (k1, k2), (x1, x2), expected in KNOWN_ANSWERS:
        out = _hash(np.uint32(k1), np.uint32(k2), np.array([x1], np.uint32), np.array([x2], np.uint32))
        assert tuple(int(o[0]) for o in out) == expected
    assert _loops(jax.jit(jax.random.split).lower(jax.random.PRNGKey(0)).compile().as_text()) == 0


def test_same_bits_as_jax_rolled_loop():
    from jax._src.random import threefry2x32

    assert threefry_cpu.use_unrolled()
    # JAX's CPU lowering (a fori_loop over the 5 key injections), run as ordinary traced ops
    rolled = jax.jit(partial(threefry2x32._threefry2x32_lowering, use_rolled_loops=True))
    rng = np.random.default_rng(0)
    k1, k2 = rng.integers(0, 2**32, 2, dtype=np.uint32)
    x1, x2 = rng.integers(0, 2**32, (2, 4096), dtype=np.uint32)
    for got, want in zip(_hash(k1, k2, x1, x2), rolled(k1, k2, x1, x2)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
