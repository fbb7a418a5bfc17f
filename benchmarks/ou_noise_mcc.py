"""How often does exploration noise alone reach MountainCarContinuous-v0's flag?

    python benchmarks/ou_noise_mcc.py [--episodes 2000]

A zero policy plus rltune's exploration noise (`ou_step`, or independent Gaussian), one full
episode (999 steps) per sample on the gymnax env: the fraction of episodes that reach the flag
and the median step at which they do. It is what the td3/ddpg/c2a2 MountainCarContinuous-v0
search spaces (rltune/presets/specs/) were chosen from: before the first success the critic has
only seen the action penalty, so the actor learns to stand still.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def reach_rate(kind: str, sigma: float, theta: float, episodes: int, dt: float = 0.01, seed: int = 0):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rltune.agents._actor_critic import ou_step
    from rltune.envs import make_gymnax

    env, params = make_gymnax("MountainCarContinuous-v0")
    k_reset, k_run = jax.random.split(jax.random.PRNGKey(seed))
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, episodes), params)

    def step(carry, key):
        state, x, done, first, t = carry
        k_noise, k_env = jax.random.split(key)
        if kind == "ou":
            x = ou_step(x, k_noise, theta, sigma, dt)
        else:
            x = sigma * jax.random.normal(k_noise, x.shape)
        _, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, episodes), state, jnp.clip(x, -1.0, 1.0), params)
        first = jnp.where(terminated & ~done, t, first)
        return (state, x, done | terminated | truncated, first, t + 1), None

    init = (state, jnp.zeros((episodes, 1)), jnp.zeros(episodes, bool), jnp.full(episodes, -1), 0)
    (_, _, _, first, _), _ = jax.lax.scan(step, init, jax.random.split(k_run, 999))
    first = np.asarray(first)
    hit = first >= 0
    return hit.mean(), (float(np.median(first[hit])) if hit.any() else float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args()
    print("| noise | std (sigma) | theta (dt 0.01) | episodes reaching the flag | median step |")
    print("|---|---|---|---|---|")
    for sigma in (0.1, 0.5, 1.0):
        rate, med = reach_rate("gaussian", sigma, 0.0, args.episodes)
        print(f"| gaussian | {sigma} | - | {rate:.1%} | {med:.0f} |", flush=True)
    for theta in (0.15, 1.0, 3.0):
        for sigma in (0.5, 1.0, 2.0):
            rate, med = reach_rate("ou", sigma, theta, args.episodes)
            print(f"| ou | {sigma} | {theta} | {rate:.1%} | {med:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
