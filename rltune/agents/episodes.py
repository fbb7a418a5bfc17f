"""Episode bookkeeping inside compiled training: running returns and a moving-average window.

The window (the reported reward is the mean of the last `reward_window` completed episodes) is
the length of the ring buffers, so it is fixed at init and read back from their shape.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

WINDOW = 100  # default of every agent's `reward_window`


@struct.dataclass
class EpisodeStats:
    running_return: jnp.ndarray  # (num_envs,) return of the episode in progress
    running_length: jnp.ndarray  # (num_envs,)
    returns: jnp.ndarray  # (window,) ring buffer of completed episode returns
    lengths: jnp.ndarray  # (window,)
    count: jnp.ndarray  # completed episodes so far (int)


def init_episode_stats(num_envs: int, window: int = WINDOW) -> EpisodeStats:
    return EpisodeStats(
        running_return=jnp.zeros(num_envs, jnp.float32),
        running_length=jnp.zeros(num_envs, jnp.int32),
        returns=jnp.zeros(window, jnp.float32),
        lengths=jnp.zeros(window, jnp.int32),
        count=jnp.zeros((), jnp.int32),
    )


def record_step(stats: EpisodeStats, reward, done) -> EpisodeStats:
    """Add one vectorized step; finished episodes go into the ring buffer in env order."""
    window = stats.returns.shape[0]
    ep_return = stats.running_return + reward
    ep_length = stats.running_length + 1
    done_i = done.astype(jnp.int32)
    slot = (stats.count + jnp.cumsum(done_i) - 1) % window
    slot = jnp.where(done, slot, window)  # out of range: dropped
    returns = stats.returns.at[slot].set(ep_return, mode="drop")
    lengths = stats.lengths.at[slot].set(ep_length, mode="drop")
    return EpisodeStats(
        running_return=jnp.where(done, 0.0, ep_return),
        running_length=jnp.where(done, 0, ep_length),
        returns=returns,
        lengths=lengths,
        count=stats.count + done_i.sum(),
    )


def restart_episodes(stats: EpisodeStats) -> EpisodeStats:
    """Every env's episode in progress starts over (completed episodes kept): for envs that were
    just reset, e.g. the new Gymnasium envs of a resumed run, whose checkpoint holds the running
    return and length of the episodes it interrupted."""
    return stats.replace(running_return=np.zeros_like(stats.running_return),
                         running_length=np.zeros_like(stats.running_length))


def window_mean(values, count):
    """Mean of the filled part of a ring buffer (NaN before the first episode ends)."""
    window = values.shape[0]
    n = jnp.minimum(count, window)
    mask = jnp.arange(window) < n
    total = jnp.where(mask, values, 0).sum()
    return jnp.where(n > 0, total / jnp.maximum(n, 1), jnp.nan)


def record_step_np(stats: EpisodeStats, reward, done) -> EpisodeStats:
    """numpy twin of `record_step` for host loops (same ring-buffer order)."""
    ep_return = np.asarray(stats.running_return) + reward
    ep_length = np.asarray(stats.running_length) + 1
    returns, lengths, count = np.array(stats.returns), np.array(stats.lengths), int(stats.count)
    window = returns.shape[0]
    for i in np.flatnonzero(done):
        returns[count % window] = ep_return[i]
        lengths[count % window] = ep_length[i]
        count += 1
    return EpisodeStats(running_return=np.where(done, 0.0, ep_return).astype(np.float32),
                        running_length=np.where(done, 0, ep_length).astype(np.int32),
                        returns=returns, lengths=lengths, count=np.asarray(count, np.int32))
