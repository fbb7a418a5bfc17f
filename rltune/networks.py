"""Small flax networks shared by the agents."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
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
    """Separate actor and critic MLPs. Discrete: logits. Continuous: mean and a learned log std."""

    hidden: Sequence[int]
    action_dim: int
    discrete: bool
    activation: str = "tanh"
    obs_ndim: int = 1  # trailing dims that make one observation; they are flattened

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape((*obs.shape[: obs.ndim - self.obs_ndim], -1))
        actor_out = MLP(self.hidden, self.action_dim, self.activation, head_scale=0.01)(obs)
        value = MLP(self.hidden, 1, self.activation, head_scale=1.0)(obs)[..., 0]
        if self.discrete:
            return actor_out, value
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return (actor_out, jnp.broadcast_to(log_std, actor_out.shape)), value
