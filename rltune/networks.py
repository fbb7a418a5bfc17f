"""Small flax networks shared by the agents."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


def _dense(features: int, scale: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale),
                    bias_init=nn.initializers.constant(0.0))


class MLP(nn.Module):
    """Hidden layers with orthogonal init, then a linear head of `out` units."""

    hidden: Sequence[int]
    out: int
    activation: str = "tanh"
    head_scale: float = 1.0

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(_dense(width, np.sqrt(2))(x))
        return _dense(self.out, self.head_scale)(x)


class ActorCritic(nn.Module):
    """Actor and critic MLPs. Discrete: logits. Continuous: mean and a learned, state-independent
    log std. `shared_torso`: one hidden stack feeds both heads (A3C's layout); `critic=False`:
    no value head (the value is 0: REINFORCE without a baseline)."""

    hidden: Sequence[int]
    action_dim: int
    discrete: bool
    activation: str = "tanh"
    obs_ndim: int = 1  # trailing dims that make one observation; they are flattened
    critic: bool = True
    shared_torso: bool = False
    # Observations normalized by a running mean and variance held in the "obs_stats" collection
    # (updated outside the gradient step, see rltune.agents._onpolicy.update_obs_stats), so the
    # statistics travel with the parameters into checkpoints, evaluation and load_agent.
    normalize_obs: bool = False
    # Gaussian mean squashed into (low, high) by tanh (per action dimension); None: unbounded.
    mean_bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape((*obs.shape[: obs.ndim - self.obs_ndim], -1))
        if self.normalize_obs:
            features = obs.shape[-1:]
            mean = self.variable("obs_stats", "mean", lambda: jnp.zeros(features, jnp.float32)).value
            var = self.variable("obs_stats", "var", lambda: jnp.ones(features, jnp.float32)).value
            self.variable("obs_stats", "count", lambda: jnp.full((), 1e-4, jnp.float32))
            mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
            obs = jnp.clip((obs - mean) / jnp.sqrt(var + 1e-8), -10.0, 10.0)
        if self.shared_torso:
            act = ACTIVATIONS[self.activation]
            x = obs
            for width in self.hidden:
                x = act(_dense(width, np.sqrt(2))(x))
            actor_out = _dense(self.action_dim, 0.01)(x)
            value = _dense(1, 1.0)(x)[..., 0] if self.critic else jnp.zeros(obs.shape[:-1], obs.dtype)
        else:
            actor_out = MLP(self.hidden, self.action_dim, self.activation, head_scale=0.01)(obs)
            value = (MLP(self.hidden, 1, self.activation, head_scale=1.0)(obs)[..., 0] if self.critic
                     else jnp.zeros(obs.shape[:-1], obs.dtype))
        if self.discrete:
            return actor_out, value
        if self.mean_bounds is not None:
            low, high = (jnp.asarray(b, jnp.float32) for b in self.mean_bounds)
            actor_out = (high + low) / 2 + (high - low) / 2 * jnp.tanh(actor_out)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return (actor_out, jnp.broadcast_to(log_std, actor_out.shape)), value


# ---------------------------------------------------------------- off-policy networks
class NatureCNN(nn.Module):
    """The DQN torso (Mnih et al. 2015): uint8 frames (..., C, H, W) -> 512 features."""

    @nn.compact
    def __call__(self, obs):
        x = jnp.moveaxis(obs.astype(jnp.float32) / 255.0, -3, -1)  # channels last for flax
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:]))
        x = nn.relu(nn.Conv(32, (8, 8), (4, 4), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (4, 4), (2, 2), padding="VALID")(x))
        x = nn.relu(nn.Conv(64, (3, 3), (1, 1), padding="VALID")(x))
        x = nn.relu(nn.Dense(512)(x.reshape((x.shape[0], -1))))
        return x.reshape((*lead, 512))


class QNetwork(nn.Module):
    """Action values for discrete actions: an MLP, or the Nature CNN for image observations."""

    hidden: Sequence[int]
    num_actions: int
    activation: str = "relu"
    cnn: bool = False
    obs_ndim: int = 1

    @nn.compact
    def __call__(self, obs):
        if self.cnn:
            return nn.Dense(self.num_actions)(NatureCNN()(obs))
        x = obs.reshape((*obs.shape[: obs.ndim - self.obs_ndim], -1)).astype(jnp.float32)
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


class DeterministicActor(nn.Module):
    """obs -> action in [low, high] (tanh squashed, rescaled)."""

    hidden: Sequence[int]
    action_dim: int
    low: Sequence[float]
    high: Sequence[float]
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs):
        act = ACTIVATIONS[self.activation]
        x = obs.astype(jnp.float32)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        x = nn.tanh(nn.Dense(self.action_dim)(x))
        low, high = jnp.asarray(self.low, jnp.float32), jnp.asarray(self.high, jnp.float32)
        return low + (x + 1.0) * 0.5 * (high - low)


class Critic(nn.Module):
    """(obs, action) -> Q value."""

    hidden: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs, action):
        act = ACTIVATIONS[self.activation]
        x = jnp.concatenate([obs.astype(jnp.float32), action.astype(jnp.float32)], -1)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]
