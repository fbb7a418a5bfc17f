"""JAX's threefry random-number hash on CPU, lowered without its loop: the same bits, sooner.

Every `jax.random` call (split, categorical, uniform, permutation) runs the threefry2x32 hash.
On CPU, JAX lowers its 20 rounds as a 5-iteration `while` loop, where every other backend gets
them unrolled. XLA:CPU runs each loop iteration as a sequence of small kernels plus copies of
the loop state, and an on-policy rollout calls the hash several times per env step; the loop
also costs compile time. `use_unrolled()` registers JAX's own unrolled lowering (the one
every other backend uses; here inlined into the program, as XLA inlines the out-of-line call
anyway) for CPU too: the same function, so every random bit is the same
(tests/test_threefry_cpu.py checks the Random123 known-answer vectors and JAX's loop), in
fewer, fused kernels.

Measured on one core, idle, PPO CartPole (the study of benchmarks/study_vs_peers.py): a vmapped
population of 16 trains 8 % faster (2.39 -> 2.19 ms per member-update), the population
segment compiles in 4.0 s instead of 5.9 s and the state's init in 1.2 s instead of 2.1 s, and
the trained parameters are bit-identical.

The lowering rules are private JAX names: when a JAX release renames them, this does nothing
and JAX's default lowering stays (slower, same results). It must run before the process
lowers any program (rltune.agents calls it on import); programs lowered before keep the loop.
The persistent compilation cache keys programs by their HLO, so the two lowerings never mix.
"""

from __future__ import annotations

_registered = False


def use_unrolled() -> bool:
    """Register the unrolled threefry lowering for CPU (idempotent). False when JAX lacks the
    private names it needs (its default lowering then stays)."""
    global _registered
    if _registered:
        return True
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32

        mlir.register_lowering(threefry2x32.threefry2x32_p, threefry2x32._threefry2x32_lowering_rule,
                               platform="cpu")
    except (ImportError, AttributeError, TypeError):  # renamed or re-signed in a later JAX
        return False
    _registered = True
    return True
