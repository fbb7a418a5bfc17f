"""Deterministic actor-critic math shared by DDPG, TD3 and C2A2.

One update function covers the family:
- DDPG (Lillicrap et al. 2016): one critic, actor and targets updated every step;
- TD3 (Fujimoto et al. 2018): twin critics, the minimum of the two for the target, delayed actor
  and target updates (`policy_delay`), target policy smoothing (clipped Gaussian noise);
- C2A2: TD3's value estimation with two actors. Both propose an action and the one with the
  larger estimated Q (min over the twin critics) is taken, when acting and in the target.

Parameters are dicts: {"actor": ..., ["actor2": ...,] "critic": {"q1": ..., ["q2": ...]}}.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

from rltune.agents import _offpolicy as off
from rltune.config import param
from rltune.envs import EnvInfo
from rltune.errors import UsageError
from rltune.networks import Critic, DeterministicActor


@dataclass(frozen=True)
class ActorCriticConfig(off.OffPolicyConfig):
    env: str = param("Pendulum-v1", "Environment id (gymnax or Gymnasium; continuous actions).", static=True)
    learning_rate: float = param(3e-4, "Adam learning rate (actors and critics).", low=0.0, low_exclusive=True)
    tau: float = param(0.005, "Soft target update rate: target <- (1 - tau) target + tau online.",
                       low=0.0, high=1.0)
    exploration_noise: float = param(0.1, "Std of the exploration noise, as a fraction of the action "
                                     "half-range; with --noise-type ou the process's sigma (its "
                                     "stationary std is about sigma / sqrt(2 theta), so it moves "
                                     "with --ou-theta too).", low=0.0)
    noise_type: str = param("gaussian", "Exploration noise: independent Gaussian per step, or an "
                            "Ornstein-Uhlenbeck process per env (temporally correlated, reset at "
                            "episode end; RL Zoo's 'ornstein-uhlenbeck').", choices=("gaussian", "ou"),
                            static=True)
    ou_theta: float = param(0.15, "OU mean reversion rate (per unit of --ou-dt).", low=0.0)
    ou_dt: float = param(0.01, "OU time step: x <- x - theta x dt + sigma sqrt(dt) N(0, 1) (SB3's "
                         "defaults: theta 0.15, dt 0.01).", low=0.0, low_exclusive=True)
    hidden_size: int = param(256, "Units per hidden layer (actor and critic).", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers (actor and critic).", low=1, static=True)
    activation: str = param("relu", "Hidden activation.", choices=("tanh", "relu"), static=True)

    def check(self) -> None:
        # x' = (1 - theta dt) x + ...: at theta dt > 1 the noise flips sign every step, at >= 2 it diverges
        if self.noise_type == "ou" and self.ou_theta * self.ou_dt > 1.0:
            raise UsageError("ou_theta", f"ou_theta * ou_dt must be at most 1 (the OU step reverts "
                             f"past its mean beyond that); got {self.ou_theta:g} * {self.ou_dt:g} = "
                             f"{self.ou_theta * self.ou_dt:g}: lower --ou-theta or --ou-dt")


@dataclass(frozen=True)
class Variant:
    """What distinguishes DDPG, TD3 and C2A2 (fixed per agent, not flags)."""

    twin: bool
    num_actors: int
    smoothing: bool


def actor_names(variant: Variant) -> tuple[str, ...]:
    return ("actor", "actor2")[: variant.num_actors]


def critic_names(variant: Variant) -> tuple[str, ...]:
    return ("q1", "q2") if variant.twin else ("q1",)


def networks(config: ActorCriticConfig, info: EnvInfo):
    if info.discrete:
        raise UsageError("env", f"{info.env_id} has discrete actions; DDPG/TD3/C2A2 need continuous "
                         "ones (use dqn)")
    hidden = (config.hidden_size,) * config.hidden_layers
    actor = DeterministicActor(hidden, info.num_actions, info.action_low, info.action_high, config.activation)
    return actor, Critic(hidden, config.activation)


def _half_range(info: EnvInfo):
    return (jnp.asarray(info.action_high) - jnp.asarray(info.action_low)) / 2.0


def _clip(action, info: EnvInfo):
    return jnp.clip(action, jnp.asarray(info.action_low), jnp.asarray(info.action_high))


def _adam():
    return optax.scale_by_adam()  # the traced learning rate is applied by off.apply_lr


# ---------------------------------------------------------------- exploration noise
def ou_step(x, rng, theta, sigma, dt):
    """One Euler-Maruyama step of the mean-zero Ornstein-Uhlenbeck process dx = -theta x dt +
    sigma dW. As a discrete AR(1) process x' = (1 - theta dt) x + sigma sqrt(dt) e, its stationary
    variance is sigma^2 dt / (1 - (1 - theta dt)^2) and its lag-1 autocorrelation 1 - theta dt:
    with SB3's theta 0.15, dt 0.01 the noise drifts over hundreds of steps, which is what lets
    a car rock itself up MountainCarContinuous's hill before it has seen any reward."""
    return x - theta * x * dt + sigma * jnp.sqrt(dt) * jax.random.normal(rng, x.shape)


# ---------------------------------------------------------------- value estimates
def min_q(critic, variant, critic_params, obs, action):
    return jnp.min(jnp.stack([critic.apply(critic_params[n], obs, action) for n in critic_names(variant)]), 0)


def best_action(actor, critic, variant, params, obs):
    """Each actor proposes; take the proposal with the larger min-Q (one actor: its action)."""
    proposals = jnp.stack([actor.apply(params[n], obs) for n in actor_names(variant)])  # (A, B, dim)
    if variant.num_actors == 1:
        return proposals[0]
    values = jnp.stack([min_q(critic, variant, params["critic"], obs, a) for a in proposals])  # (A, B)
    pick = jnp.argmax(values, 0)
    return jnp.take_along_axis(proposals, pick[None, :, None], 0)[0]


def critic_loss(critic, variant, critic_params, batch, target):
    losses = [((critic.apply(critic_params[n], batch["obs"], batch["action"]) - target) ** 2).mean()
              for n in critic_names(variant)]
    q1 = critic.apply(critic_params["q1"], batch["obs"], batch["action"])
    return sum(losses), q1.mean()


def actor_loss(actor, critic, actor_params, critic_params, obs):
    return -critic.apply(critic_params["q1"], obs, actor.apply(actor_params, obs)).mean()


# ---------------------------------------------------------------- the algorithm for the loop
def make_algo(config: ActorCriticConfig, info: EnvInfo, variant: Variant) -> off.Algo:
    actor, critic = networks(config, info)
    policy_delay = getattr(config, "policy_delay", 1)

    def init_learner(rng, hp):
        keys = jax.random.split(rng, 4)
        obs = jnp.zeros((1, *info.obs_shape), jnp.float32)
        act = jnp.zeros((1, info.num_actions), jnp.float32)
        params = {n: actor.init(keys[i], obs) for i, n in enumerate(actor_names(variant))}
        params["critic"] = {n: critic.init(keys[2 + i], obs, act) for i, n in enumerate(critic_names(variant))}
        opt_state = {n: _adam().init(params[n]) for n in params}
        return off.Learner(params, params, opt_state, jnp.zeros((), jnp.int32))

    def explore(hp, params, obs, rng, env_steps, noise):
        k_noise, k_uniform = jax.random.split(rng)
        action = best_action(actor, critic, variant, params, obs)
        if config.noise_type == "ou":
            noise = ou_step(noise, k_noise, hp["ou_theta"], hp["exploration_noise"], hp["ou_dt"])
            step = noise
        else:
            step = jax.random.normal(k_noise, action.shape) * hp["exploration_noise"]
        action = _clip(action + step * _half_range(info), info)
        uniform = jax.random.uniform(k_uniform, action.shape, minval=jnp.asarray(info.action_low),
                                     maxval=jnp.asarray(info.action_high))
        return jnp.where(env_steps < config.learning_starts, uniform, action), noise

    def update(hp, learner: off.Learner, batch, rng):
        params, target, opt_state = learner.params, learner.target_params, learner.opt_state
        # -- critic: regress on r + gamma * (1 - terminated) * min-Q_target(s', smoothed a')
        next_action = best_action(actor, critic, variant, target, batch["next_obs"])
        if variant.smoothing:
            scale = _half_range(info)
            noise = jnp.clip(jax.random.normal(rng, next_action.shape) * hp["target_noise"],
                             -hp["noise_clip"], hp["noise_clip"]) * scale
            next_action = _clip(next_action + noise, info)
        next_q = min_q(critic, variant, target["critic"], batch["next_obs"], next_action)
        y = jax.lax.stop_gradient(batch["reward"] + hp["gamma"] * (1.0 - batch["terminated"]) * next_q)
        (c_loss, q_mean), grads = jax.value_and_grad(partial(critic_loss, critic, variant), has_aux=True)(
            params["critic"], batch, y)
        updates, c_opt = _adam().update(grads, opt_state["critic"], params["critic"])
        params = {**params, "critic": off.apply_lr(params["critic"], updates, hp["learning_rate"])}
        opt_state = {**opt_state, "critic": c_opt}

        # -- actors and all targets, every policy_delay gradient steps
        def actors_and_targets(args):
            params, target, opt_state = args
            losses = []
            params, opt_state = dict(params), dict(opt_state)
            for n in actor_names(variant):
                loss, grads = jax.value_and_grad(actor_loss, argnums=2)(actor, critic, params[n], params["critic"],
                                                                        batch["obs"])
                updates, opt_state[n] = _adam().update(grads, opt_state[n], params[n])
                params[n] = off.apply_lr(params[n], updates, hp["learning_rate"])
                losses.append(loss)
            target = off.polyak(target, params, hp["tau"])
            return (params, target, opt_state), jnp.mean(jnp.stack(losses))

        def skip(args):
            return args, jnp.zeros((), jnp.float32)

        due = learner.grad_steps % policy_delay == 0
        (params, target, opt_state), a_loss = jax.lax.cond(due, actors_and_targets, skip, (params, target, opt_state))
        metrics = {"loss": c_loss, "critic_loss": c_loss, "actor_loss": a_loss, "q_value": q_mean}
        return off.Learner(params, target, opt_state, learner.grad_steps + 1), metrics

    return off.Algo(init_learner, explore, update, ("loss", "critic_loss", "actor_loss", "q_value"),
                    (info.num_actions,), jnp.float32)


def policy_fn(config: ActorCriticConfig, variant: Variant):
    """Jitted `act(params, obs, rng, deterministic)`: the (best) actor's action, plus exploration
    noise when not deterministic (Gaussian of std `exploration_noise` for either noise type: a
    stateless call has no OU state; the training loop carries that)."""
    info = off.agent_info(config)
    actor, critic = networks(config, info)
    _, hp = off.split_config(config)

    @partial(jax.jit, static_argnums=(3,))
    def act(params, obs, rng, deterministic: bool):
        action = best_action(actor, critic, variant, params, jnp.asarray(obs, jnp.float32))
        if deterministic:
            return action
        noise = jax.random.normal(rng, action.shape) * hp["exploration_noise"] * _half_range(info)
        return _clip(action + noise, info)

    return act
