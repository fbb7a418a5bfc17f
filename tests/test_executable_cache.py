"""The executable cache: a warm process runs rltune's programs without tracing them, with the
same results; anything that changes a program changes its key; entries are read safely."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltune import executable_cache as ec

# A fresh process: PPO's init (orthogonal init: a LAPACK QR in the program) and one training
# segment on CartPole, through the cache. It prints how often each program was traced and a
# digest of the trained state.
SCRIPT = textwrap.dedent("""
    import hashlib, json, logging, re
    import jax, numpy as np
    traced = []

    class Traces(logging.Handler):
        def emit(self, record):
            found = re.search("Finished tracing (\\S+) for", record.getMessage())
            if found:
                traced.append(found.group(1))

    logging.getLogger("jax").addHandler(Traces())
    jax.config.update("jax_log_compiles", True)
    from rltune.agents import get_agent
    from rltune.config import from_dict
    ppo = get_agent("ppo")
    config = from_dict(ppo.Config, {"env": "CartPole-v1", "num_envs": 2, "num_steps": 8, "total_steps": 64,
                                    "hidden_size": 8, "update_epochs": 1, "num_minibatches": 2})
    state = ppo.init(config)
    state, metrics = ppo.train_segment(config, state, 2)
    digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves((state, metrics))))
    print(json.dumps({"traced": traced, "digest": digest.hexdigest()}))
""")


def _run(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_warm_process_traces_nothing_and_trains_bit_identically(tmp_path):
    env = {**os.environ, "RLTUNE_COMPILE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RLTUNE_COMPILE_CACHE", None)
    cold = _run(env)
    entries = sorted(p.name for p in (tmp_path / "cache" / ec.SUBDIR).glob("*/*.xla"))
    assert len(entries) == 2  # init and the segment
    warm = _run(env)
    programs = {"_init_jit", "_segment_jit"}
    assert programs <= set(cold["traced"]) and not programs & set(warm["traced"]), (cold, warm)
    assert warm["digest"] == cold["digest"]
    off = _run({**env, "RLTUNE_COMPILE_CACHE": "0"})  # plain jax.jit: the same numbers
    assert off["digest"] == cold["digest"] and programs <= set(off["traced"])


def test_a_program_loaded_from_jaxs_cache_is_not_stored(tmp_path):
    """XLA:CPU does not serialize whole an executable it loaded from JAX's persistent cache
    (reloaded, it fails when run): a process that finds its programs there stores none."""
    env = {**os.environ, "RLTUNE_COMPILE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("RLTUNE_COMPILE_CACHE", None)
    cold = _run(env)
    shutil.rmtree(tmp_path / "cache" / ec.SUBDIR)  # JAX's cache keeps them
    again = _run(env)
    assert not list((tmp_path / "cache" / ec.SUBDIR).glob("*/*.xla"))
    assert again["digest"] == cold["digest"]


def test_the_key_changes_with_what_decides_the_program(monkeypatch):
    tree = jax.tree.structure((np.zeros(2),))
    avals = (((2,), "float32", False),)
    base = ec.program_key("p", ("config-a",), tree, avals)
    assert base == ec.program_key("p", ("config-a",), tree, avals)
    assert base != ec.program_key("p", ("config-b",), tree, avals)
    assert base != ec.program_key("q", ("config-a",), tree, avals)
    assert base != ec.program_key("p", ("config-a",), tree, (((3,), "float32", False),))
    assert base != ec.program_key("p", ("config-a",), tree, (((2,), "float32", True),))  # weak type
    monkeypatch.setattr(ec, "environment", lambda: {"versions": {"jax": "another"}})
    assert base != ec.program_key("p", ("config-a",), tree, avals)
    # a static argument without a stable description (an object address) is never stored
    assert ec.program_key("p", (object(),), tree, avals) is None
    assert ec.program_key("p", (lambda x: x,), tree, avals) is None


def test_the_environment_holds_rltunes_source_and_xla_flags(monkeypatch):
    env = ec.environment()
    assert len(env["rltune_source"]) == 64 and env["versions"]["jax"] == jax.__version__
    ec.environment.cache_clear()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    try:
        assert ec.environment()["xla_flags"] == "--xla_cpu_enable_fast_math=true"
    finally:
        ec.environment.cache_clear()


def test_tree_structures_round_trip_as_json():
    from rltune.agents import get_agent
    from rltune.config import from_dict

    ppo = get_agent("ppo")
    state = jax.eval_shape(lambda: ppo.init(from_dict(ppo.Config, {"env": "CartPole-v1"})))
    for tree in (state, {"a": (1, [2, None]), "b": 3}, 5, None, ()):
        treedef = jax.tree.structure(tree)
        encoded = json.loads(json.dumps(ec.encode_tree(treedef)))
        assert ec.decode_tree(encoded) == treedef
    with pytest.raises(ValueError):
        ec.decode_tree(["os:system", None, []])  # only rltune's packages' node types are imported


class _System:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


class _NumpyLoad:  # numpy.load with allow_pickle=True would unpickle a second file
    def __reduce__(self):
        return (np.load, ("second.pkl", None, True))


@pytest.mark.parametrize("gadget", [_System, _NumpyLoad])
def test_an_entry_naming_other_code_is_refused_not_run(tmp_path, monkeypatch, gadget):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "second.pkl").write_bytes(pickle.dumps(_System()))
    payload = pickle.dumps(gadget())
    header = {"format": ec.FORMAT, "name": "x", "out_tree": "*", "custom_calls": [], "out_avals": [],
              "sha256": __import__("hashlib").sha256(payload).hexdigest()}
    entry = tmp_path / "entry.xla"
    entry.write_bytes(json.dumps(header).encode() + b"\n" + payload)
    assert ec._load(entry, jax.tree.structure(())) is None
    assert not (tmp_path / "exploited").exists()


def _unseen_constant() -> np.float32:
    """A constant no earlier run compiled into a program (JAX's persistent cache is the user's)."""
    return np.float32(1 + uuid.uuid4().int % 100_000)


def test_a_damaged_entry_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RLTUNE_COMPILE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("rltune.compile_cache._enabled", tmp_path)
    c = float(_unseen_constant())  # a program JAX's own cache cannot hold yet: compiled here, stored
    double = ec.Program(jax.jit(lambda x: x * c), "tests.double")
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(double(x), x * c)
    (entry,) = (tmp_path / ec.SUBDIR).glob("*/*.xla")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the payload flipped: its checksum no longer matches
    entry.write_bytes(bytes(data))
    again = ec.Program(jax.jit(lambda x: x * c), "tests.double")
    np.testing.assert_array_equal(again(x), x * c)


def test_an_executable_jax_already_held_is_not_stored(tmp_path, monkeypatch):
    """jit ran it first: the Program's compile gets JAX's in-memory executable back (which may
    have come from JAX's disk cache and would not serialize whole), so nothing is stored."""
    monkeypatch.setattr("rltune.compile_cache._enabled", tmp_path)
    jitted = jax.jit(lambda x: x * 3.0 + 1.0)
    x = jnp.arange(4.0)
    jitted(x)
    np.testing.assert_array_equal(ec.Program(jitted, "tests.held")(x), x * 3 + 1)
    assert not list((tmp_path / ec.SUBDIR).glob("*/*.xla"))
    c = float(_unseen_constant())
    fresh = ec.Program(jax.jit(lambda x: x * 3.0 + c), "tests.fresh")  # compiled here: stored
    np.testing.assert_array_equal(fresh(x), x * 3 + c)
    assert len(list((tmp_path / ec.SUBDIR).glob("*/*.xla"))) == 1


def test_a_program_with_a_host_callback_is_not_stored(tmp_path, monkeypatch):
    monkeypatch.setattr("rltune.compile_cache._enabled", tmp_path)

    def noisy(x):
        jax.debug.callback(lambda v: None, x)
        return x + 1.0

    program = ec.Program(jax.jit(noisy), "tests.noisy")
    np.testing.assert_array_equal(program(jnp.ones(2)), 2 * np.ones(2))
    assert not list((tmp_path / ec.SUBDIR).glob("*/*.xla"))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])  # Pendulum: float returns
def test_quick_compile_options_give_the_same_bits(env_id):
    """init and the compiled evaluation compile with QUICK_COMPILE: the same numbers as XLA's
    defaults, bit for bit."""
    from rltune import runner
    from rltune.agents import _onpolicy, get_agent
    from rltune.config import from_dict
    from rltune.envs import env_info
    from rltune.evaluate import _compiled_episodes

    ppo = get_agent("ppo")
    config = from_dict(ppo.Config, {"env": env_id, "num_envs": 4, "hidden_size": 16, "total_steps": 64})
    static, hp = ppo.split_config(config)
    info = env_info(env_id, "gymnax")
    make_algo = ppo.population_segment(static, info).context[0]
    run = _compiled_episodes(runner._greedy_policy("ppo", static, info), env_id, 8)
    assert _onpolicy._init_jit.compiler_options == run.compiler_options == dict(ec.QUICK_COMPILE)

    def both(jitted, *args):
        lowered = jitted.lower(*args)
        return lowered.compile(), lowered.compile(compiler_options=dict(ec.QUICK_COMPILE))

    default, quick = both(_onpolicy._init_jit.jitted, make_algo, static, info, jax.random.PRNGKey(0), hp)
    states = []
    for seed in range(3):
        a, b = default(jax.random.PRNGKey(seed), hp), quick(jax.random.PRNGKey(seed), hp)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        states.append(a)
    default, quick = both(run.jitted, states[0].params, np.int32(0))
    for seed, state in enumerate(states):
        for scale in (1.0, 5.0, 25.0):  # larger weights: other actions, other episode lengths
            params = jax.tree.map(lambda w: w * scale, state.params)
            for x, y in zip(default(params, np.int32(seed)), quick(params, np.int32(seed))):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_program_compiles_with_its_options_keyed_apart_and_without_those_xla_rejects(tmp_path, monkeypatch):
    monkeypatch.setattr("rltune.compile_cache._enabled", tmp_path)
    seen = []
    compile_ = jax.stages.Lowered.compile

    def spy(self, compiler_options=None):
        seen.append(compiler_options)
        return compile_(self, compiler_options=compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    c = float(_unseen_constant())
    x = jnp.arange(3.0)
    quick = ec.Program(jax.jit(lambda x: x * c), "tests.quick", compiler_options=ec.QUICK_COMPILE)
    np.testing.assert_array_equal(quick(x), x * c)
    assert seen == [dict(ec.QUICK_COMPILE)]
    plain = ec.Program(jax.jit(lambda x: x * c), "tests.quick")
    signature = ((), jax.tree.structure((x,)), (((3,), "float32", False),), None)
    assert quick._path(tmp_path, signature) != plain._path(tmp_path, signature)
    # an option this XLA does not know: compiled with XLA's defaults instead, the same numbers
    seen.clear()
    unknown = ec.Program(jax.jit(lambda x: x * c + 1), "tests.unknown", compiler_options=(("xla_no_such_option", True),))
    np.testing.assert_array_equal(unknown(x), x * c + 1)
    assert seen == [{"xla_no_such_option": True}, None]
