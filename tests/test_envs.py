import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltune.agents.episodes import WINDOW, init_episode_stats, record_step, window_mean
from rltune.envs import make_gymnax


def test_episode_window_records_finished_episodes_in_order():
    stats = init_episode_stats(2)
    stats = record_step(stats, jnp.array([1.0, 2.0]), jnp.array([False, True]))
    stats = record_step(stats, jnp.array([3.0, 5.0]), jnp.array([True, True]))
    assert int(stats.count) == 3
    np.testing.assert_allclose(np.asarray(stats.returns[:3]), [2.0, 4.0, 5.0])
    np.testing.assert_allclose(np.asarray(stats.lengths[:3]), [1, 2, 1])
    assert float(window_mean(stats.returns, stats.count)) == pytest.approx(11 / 3)


def test_window_keeps_the_last_100():
    stats = init_episode_stats(1)
    for i in range(WINDOW + 20):
        stats = record_step(stats, jnp.array([float(i)]), jnp.array([True]))
    assert float(window_mean(stats.returns, stats.count)) == pytest.approx(np.mean(np.arange(20, WINDOW + 20)))


def test_auto_reset_gives_the_known_returns():
    """Countdown probe: episodes of length 1, 2, 3, 1, ... with reward 1 per step."""
    env, params = make_gymnax("Probe-Countdown-v0")
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(0), 3), params)
    stats = init_episode_stats(3)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    for t in range(12):
        obs, state, reward, term, trunc, _ = step(jax.random.split(jax.random.PRNGKey(t), 3), state,
                                                   jnp.zeros(3, jnp.int32), params)
        assert not bool(trunc.any())
        stats = record_step(stats, reward, jnp.logical_or(term, trunc))
    # each env completes 1+2+3+1+2+3 = 12 steps: six episodes each, returns 1,2,3,1,2,3
    assert int(stats.count) == 18
    assert sorted(np.asarray(stats.returns[:18]).tolist()) == sorted([1.0, 2.0, 3.0] * 6)


def test_truncation_is_reported_with_the_final_observation():
    env, params = make_gymnax("Probe-Truncation-v0")
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    for t in range(10):
        obs, state, reward, term, trunc, info = env.step(jax.random.PRNGKey(t), state, 0, params)
    assert bool(trunc) and not bool(term)
    assert int(state.time) == 0  # auto-reset


def test_compiled_evaluation_plays_the_same_episodes_as_the_stepped_one():
    """All episodes in one compiled loop (tuning trials) = one dispatch per step: same returns
    and lengths episode by episode, episodes that end early masked while the others run."""
    import jax.numpy as jnp

    from rltune.evaluate import _evaluate_gymnax, evaluate_compiled

    def policy(params, obs):  # push toward the pole's lean: episodes of many different lengths
        return (obs[:, 2] * params["w"] > 0).astype(jnp.int32)

    params = {"w": jnp.asarray(1.0)}
    compiled = evaluate_compiled(policy, params, "CartPole-v1", 6, seed=3)
    stepped = _evaluate_gymnax(lambda obs: np.asarray(policy(params, jnp.asarray(obs))), "CartPole-v1", 6, 3)
    assert compiled.returns == stepped.returns and compiled.lengths == stepped.lengths
    assert len(set(compiled.lengths)) > 1 and compiled.backend == "gymnax"
    assert evaluate_compiled(policy, params, "Probe-Truncation-v0", 3).returns == (10.0, 10.0, 10.0)


def test_gymnax_imports_without_matplotlib_and_still_renders():
    # matplotlib and seaborn are gymnax's rendering-only imports (0.12 s of every worker's start):
    # deferred while gymnax imports, then real on first use; other matplotlib imports unaffected.
    import subprocess
    import sys

    code = """
import sys
import jax
from rltune.envs import import_gymnax
gymnax = import_gymnax()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "seaborn")))
import matplotlib
matplotlib.use("Agg")
env, params = gymnax.make("Pong-misc")  # its render uses pyplot, colors and seaborn
_, state = env.reset(jax.random.PRNGKey(0), params)
print(type(env.render(state, params)).__name__)
from matplotlib.ticker import MaxNLocator
import matplotlib.pyplot as plt
print(type(plt).__name__, type(sys.modules["matplotlib.colors"]).__name__, MaxNLocator.__module__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["[]", "AxesImage", "module module matplotlib.ticker"]


@pytest.mark.parametrize("uses", ["import matplotlib.pyplot as plt\nplt.figure\nfrom matplotlib import cm\n",
                                  "import matplotlib.ticker\nfrom matplotlib import colors\ncolors.to_rgb('red')\n"])
def test_a_gymnax_that_uses_matplotlib_while_importing_still_imports(tmp_path, uses):
    # The stand-ins must not break a gymnax (unpinned) whose import touches matplotlib itself.
    import os
    import subprocess
    import sys

    (tmp_path / "gymnax").mkdir()
    (tmp_path / "gymnax" / "__init__.py").write_text(uses + "registered_envs = ['Fake-v0']\n")
    code = ("import sys\nfrom rltune.envs import import_gymnax\ng = import_gymnax()\n"
            "print(g.registered_envs, type(sys.modules['matplotlib']).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["['Fake-v0']", "module"]
