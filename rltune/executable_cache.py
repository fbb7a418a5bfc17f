"""Compiled programs kept on disk whole, so a warm process neither traces nor lowers them.

JAX's persistent compilation cache (rltune/compile_cache.py) saves XLA's compile, but it is
keyed by the lowered program: a new process must still trace and lower every program to find
its entry. For PPO's vmapped population segment that is about 0.8 s of a worker's warm start,
against 0.2 s to load the executable itself. This cache keys a compiled program by what decides
it, known before tracing:

- the program's name and its static arguments (configs, env info: their reprs; functions:
  their qualified names),
- the tree structure, shapes, dtypes and weak types of its array arguments,
- everything else a compile depends on: the source of the rltune package, the versions of
  jax, jaxlib, flax, optax, gymnax and numpy, JAX's configuration, XLA_* variables, the device
  and the CPU's features.

Any change to one of them is a new key: the program is traced and compiled as `jax.jit` would,
and stored. A program with a static argument whose repr is not stable across processes (an
object address in it) is not stored. Only the CPU backend uses it (the executables this was
checked with); elsewhere, and when the compile cache is off (`RLTUNE_COMPILE_CACHE=0`), a
program is the plain `jax.jit` function.

An entry is written from a fresh compile only: an executable that XLA:CPU itself loaded from
JAX's cache does not serialize whole. Entries are machine code for this machine, trusted as
JAX's own cache is (in the same directory); the metadata JAX pickles with the executable is
read by an unpickler that resolves only jax, jaxlib and numpy names, and the result tree's
structure is stored as plain JSON.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import io
import json
import os
import pickle
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

FORMAT = 1
SUBDIR = "executables"
# A jax.monitoring duration event per program loaded from here: its load counts as compile time
# where rltune measures that (runner.CompileClock), as the trace and compile it replaces did.
LOAD_EVENT = "/rltune/executable_cache/load_duration"
_shapes_only = False  # see shapes_only()


@contextlib.contextmanager
def shapes_only():
    """Inside it, a Program call returns its output's shapes (`Program.eval_shape`) instead of
    running: `with shapes_only(): abstract = agent.init(config)` traces nothing when init's
    executable is on disk."""
    global _shapes_only
    previous, _shapes_only = _shapes_only, True
    try:
        yield
    finally:
        _shapes_only = previous


class Program:
    """A jitted function with its compiled executables kept across processes. `name` names the
    program (module-qualified); `static_argnums` are the arguments the jitted function treats as
    static and `context` the values it closes over that shape it: both key the program.

    For programs called a few times per trial (a training segment, an evaluation): a call
    costs ~0.2 ms of Python, against ~0.05 ms through jax.jit's C++ dispatch, so a function
    called once per env step stays a plain jit. rltune's own programs only: the key holds
    rltune's source, not a caller's."""

    def __init__(self, jitted: Callable, name: str, static_argnums: tuple[int, ...] = (), context: tuple = ()):
        self.jitted = jitted
        self.name = name
        self.static_argnums = frozenset(static_argnums)
        self.context = context  # what the jitted function closes over that decides the program
        self._compiled: dict[Any, Any] = {}  # in-process: signature -> jax.stages.Compiled

    def __call__(self, *args):
        if _shapes_only:
            return self.eval_shape(*args)
        directory = _directory()
        if directory is None:
            return self.jitted(*args)
        try:
            static, dynamic, treedef, avals = self._signature(args)
        except TypeError:  # not an array argument (a tracer: called inside a traced function)
            return self.jitted(*args)
        compiled = self._compiled.get((static, treedef, avals))
        if compiled is None:
            compiled = self._load_or_compile(directory, args, self._key(static, treedef, avals), treedef)
            self._compiled[(static, treedef, avals)] = compiled
        return compiled(*dynamic)

    def _signature(self, args):
        """(static args, dynamic args, the dynamic args' tree structure and avals)."""
        import jax

        static = tuple(a for i, a in enumerate(args) if i in self.static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        leaves, treedef = jax.tree.flatten(dynamic)
        return static, dynamic, treedef, tuple(_aval(x) for x in leaves)

    def _key(self, static, treedef, avals) -> str | None:
        return program_key(self.name, self.context + static, treedef, avals)

    def cache_size(self) -> int:
        """Programs this process holds for it (loaded or compiled here, or in jax.jit's cache)."""
        return len(self._compiled) + self.jitted._cache_size()

    def eval_shape(self, *args):
        """`jax.eval_shape` of the program: read from its entry's header when it has one (no
        tracing), else traced."""
        import jax

        directory = _directory()
        if directory is not None:
            try:
                static, _, treedef, avals = self._signature(args)
                key = self._key(static, treedef, avals)
                header = _read_header(directory / f"{key}.xla") if key is not None else None
                if header is not None:
                    structs = [jax.ShapeDtypeStruct(tuple(shape), dtype, weak_type=weak)
                               for shape, dtype, weak in header["out_avals"]]
                    return jax.tree.unflatten(decode_tree(header["out_tree"]), structs)
            except (TypeError, ValueError, KeyError, ImportError, AttributeError):
                pass
        positions = [i for i in range(len(args)) if i not in self.static_argnums]

        def with_static(*dynamic):
            full = list(args)
            for i, value in zip(positions, dynamic):
                full[i] = value
            return self.jitted(*full)

        return jax.eval_shape(with_static, *(args[i] for i in positions))

    def _load_or_compile(self, directory: Path, args, key: str | None, treedef):
        path = directory / f"{key}.xla" if key is not None else None
        import jax

        if path is not None:
            start = time.perf_counter()
            compiled = _load(path, treedef)
            if compiled is not None:
                jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - start)
                return compiled

        lowered = self.jitted.lower(*args)
        if path is None:
            return lowered.compile()
        compiled = _compile_fresh(lowered)
        targets = custom_call_targets(lowered.as_text(debug_info=False))
        if all(t.startswith(_LAPACK) for t in targets):  # a host callback's address would not survive a reload
            out_avals = [(s.shape, str(s.dtype), bool(s.weak_type)) for s in jax.tree.leaves(lowered.out_info)]
            _store(path, compiled, self.name, targets, out_avals)
        return compiled


def program(name: str, static_argnums: tuple[int, ...] = ()):
    """Decorator: `jax.jit(fun, static_argnums=...)` kept in the executable cache."""
    import jax

    def wrap(fun):
        return functools.wraps(fun)(Program(jax.jit(fun, static_argnums=static_argnums), name, static_argnums))

    return wrap


# ---------------------------------------------------------------- where, and whether
def _directory() -> Path | None:
    """The cache directory when this process uses it: the compile cache on, the CPU backend."""
    from rltune import compile_cache

    base = compile_cache.enable()
    if base is None or not _cpu_backend():
        return None
    return base / SUBDIR


@functools.lru_cache(maxsize=1)
def _cpu_backend() -> bool:
    import jax

    return jax.default_backend() == "cpu"


# ---------------------------------------------------------------- the key
def program_key(name: str, static: tuple, treedef, avals: tuple) -> str | None:
    """The hex key of a program, or None when a static argument has no stable description."""
    parts = [_describe(s) for s in static]
    if any(p is None for p in parts):
        return None
    text = json.dumps({"format": FORMAT, "name": name, "static": parts, "tree": str(treedef),
                       "avals": [list(a) for a in avals], "environment": environment()})
    return hashlib.sha256(text.encode()).hexdigest()


def _describe(value) -> str | None:
    if callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        if "<locals>" in value.__qualname__ or "<lambda>" in value.__qualname__:
            return None  # a closure: its captured values are not in its name
        return f"{value.__module__}.{value.__qualname__}"
    text = repr(value)
    return None if " at 0x" in text or " object at " in text else text


def _aval(x) -> tuple:
    """(shape, dtype, weak type) of an array argument, as jax.jit sees it."""
    import jax

    if isinstance(x, jax.core.Tracer):
        raise TypeError("traced")
    aval = jax.typeof(x)
    return (tuple(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)))


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Everything besides the program's own arguments that decides what it compiles to."""
    import jax
    from importlib import metadata

    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "gymnax", "numpy", "ml_dtypes"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    skip = ("compilation_cache", "persistent_cache", "log", "traceback", "dump", "explain", "debug_info")
    config = {k: repr(v) for k, v in sorted(jax.config.values.items()) if not any(s in k for s in skip)}
    device = jax.devices()[0]
    return {"rltune_source": _source_hash(), "versions": versions, "jax_config": config,
            "xla_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("XLA_")},
            "device": [device.platform, device.device_kind, len(jax.devices()),
                       getattr(device.client, "platform_version", "")],
            "cpu": _cpu_features(), "python": sys.version}


def _source_hash() -> str:
    """The rltune package's Python source: an edited agent or env is a new program."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cpu_features() -> str:
    """XLA:CPU compiles for the host's instruction set: the model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() + platform.machine()
    wanted = [line for line in text.splitlines()[:40] if line.startswith(("model name", "flags"))]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()


# ---------------------------------------------------------------- compile, store, load
def _compile_fresh(lowered):
    """Compile without JAX's persistent cache: XLA:CPU serializes an executable whole only when
    it compiled it itself (one it loaded from that cache fails when run after a reload). JAX
    decides once per process whether it uses its cache: that decision is reset around this
    compile, so it is taken again, with the cache off, then on."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.values["jax_enable_compilation_cache"]
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        return lowered.compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)
        compilation_cache.reset_cache()


def custom_call_targets(stablehlo: str) -> list[str]:
    """The custom calls a lowered program makes (LAPACK's kernels, a host callback, ...)."""
    return sorted(set(re.findall(r"custom_call @([\w.$-]+)", stablehlo)))


# jaxlib's LAPACK kernels (QR in the orthogonal initializer): their function table is set up
# when JAX lowers a call to one, so a loaded program that calls one needs it set up first.
_LAPACK = "lapack_"


def prepare_custom_calls(targets) -> None:
    """Set up what a loaded program's custom calls need (no JAX backend, no thread)."""
    if any(t.startswith(_LAPACK) for t in targets):
        from jax._src.lax import linalg

        linalg.initialize_lapack()


def _store(path: Path, compiled, name: str, targets: list[str], out_avals: list) -> None:
    """Write the entry (header line of JSON, then JAX's serialization), atomically. A program
    that cannot be serialized is simply not stored."""
    from jax.experimental import serialize_executable

    try:
        payload, _, out_tree = serialize_executable.serialize(compiled)
        header = {"format": FORMAT, "name": name, "out_tree": encode_tree(out_tree), "custom_calls": targets,
                  "out_avals": out_avals,
                  "sha256": hashlib.sha256(payload).hexdigest()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(json.dumps(header).encode() + b"\n" + payload)
        tmp.replace(path)
    except Exception as exc:  # noqa: BLE001 - a cache: the program runs either way
        print(f"rltune: executable of {name} not cached ({type(exc).__name__}: {exc})", file=sys.stderr)


def _read_header(path: Path) -> dict | None:
    try:
        with open(path, "rb") as file:
            header = json.loads(file.readline())
    except (OSError, ValueError):
        return None
    return header if header.get("format") == FORMAT else None


def _load(path: Path, treedef):
    """The stored program as a jax.stages.Compiled, or None (no entry, or one that does not read)."""
    import jax

    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        line, payload = data.split(b"\n", 1)
        header = json.loads(line)
        if header.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != header["sha256"]:
            return None
        out_tree = decode_tree(header["out_tree"])
        if not all(t.startswith(_LAPACK) for t in header["custom_calls"]):
            return None
        prepare_custom_calls(header["custom_calls"])
        backend = jax.devices()[0].client
        unloaded, args_info_flat, no_kwargs = _Unpickler(io.BytesIO(payload), backend).load()
        in_tree = jax.tree.structure((tuple(jax.tree.unflatten(treedef, [0] * treedef.num_leaves)), {}))
        args_info = in_tree.unflatten(args_info_flat)
        return jax.stages.Compiled(unloaded.load(), [], args_info, out_tree, no_kwargs=no_kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign entry: compile instead
        print(f"rltune: cached executable {path.name} not loaded ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def _unpickler_base():
    from jax.experimental.serialize_executable import _JaxPjrtUnpickler

    return _JaxPjrtUnpickler


class _Unpickler:
    """JAX's executable unpickler, resolving only jax, jaxlib and numpy names (and a few plain
    builtins): the metadata pickled with an executable needs no more."""

    _BUILTINS = {"set", "frozenset", "slice", "range", "complex", "bytearray", "tuple", "list", "dict",
                 "int", "float", "bool", "str", "bytes"}

    def __new__(cls, file, backend):
        base = _unpickler_base()

        class Restricted(base):
            def find_class(self, module, name):
                top = module.split(".")[0]
                allowed = (top in ("jax", "jaxlib", "numpy")
                           or (module == "builtins" and name in cls._BUILTINS))
                if not allowed or "." in name or name.startswith("_") and not name.startswith("_unpickle"):
                    raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cached executable")
                found = super().find_class(module, name)
                if isinstance(found, type(sys)):
                    raise pickle.UnpicklingError(f"{module}.{name} is a module")
                return found

        return Restricted(file, backend)


# ---------------------------------------------------------------- pytree structures as JSON
def encode_tree(treedef) -> Any:
    """A tree structure as JSON: "*" for a leaf, else [node type, aux data, children]."""
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return "*"
    kind, aux = treedef.node_data()
    return [f"{kind.__module__}:{kind.__qualname__}", _encode_aux(aux), [encode_tree(c) for c in treedef.children()]]


def decode_tree(data):
    import jax
    from jax._src import tree_util

    if data == "*":
        return jax.tree.structure(0)
    kind, aux, children = data
    node = (_node_type(kind), _decode_aux(aux))
    return jax.tree.structure(0).from_node_data_and_children(
        tree_util.default_registry, node, [decode_tree(c) for c in children])


# Packages whose pytree node types an entry may name (imported by name when it is read).
_NODE_PACKAGES = ("builtins", "collections", "jax", "flax", "optax", "rltune", "gymnax", "chex")


def _node_type(name: str) -> type:
    module, qualname = name.split(":")
    if module.split(".")[0] not in _NODE_PACKAGES:
        raise ValueError(f"pytree node type {name} is not one of rltune's")
    if (module, qualname) == ("builtins", "NoneType"):
        return type(None)
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not isinstance(found, type):
        raise ValueError(f"{name} is not a type")
    return found


def _encode_aux(value):
    if isinstance(value, tuple):
        return {"tuple": [_encode_aux(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode_aux(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"pytree aux data {type(value).__name__} is not stored")


def _decode_aux(value):
    if isinstance(value, dict):
        (kind, items), = value.items()
        decoded = [_decode_aux(v) for v in items]
        return tuple(decoded) if kind == "tuple" else decoded
    return value
