"""Compiled programs kept on disk whole, so a warm process neither traces nor lowers them.

JAX's persistent compilation cache (rltune/compile_cache.py) saves XLA's compile, but it is
keyed by the lowered program: a new process must still trace and lower every program to find
its entry. For PPO's vmapped population segment that is about 0.8 s of a worker's warm start,
against 0.2 s to load the executable itself. This cache keys a compiled program by what decides
it, known before tracing:

- the program's name and its static arguments (configs, env info: their reprs; functions:
  their qualified names),
- the tree structure, shapes, dtypes and weak types of its array arguments,
- the XLA options it is compiled with (`QUICK_COMPILE` for init and the evaluation),
- everything else a compile depends on: the source of the rltune package, the versions of
  jax, jaxlib, flax, optax, gymnax and numpy, JAX's configuration, XLA_FLAGS, the device and
  the CPU.

Any change to one of them is a new key: the program is traced and compiled as `jax.jit` would,
and stored. A program with a static argument whose repr is not stable across processes (an
object address in it) is not stored, nor one that calls back into Python. Only the CPU backend
uses it (the executables this was checked with); elsewhere, when the compile cache is off
(`RLTUNE_COMPILE_CACHE=0`), under `jax_disable_jit` or a NaN/Inf check, or with a JAX that
lacks what it needs, a program is the plain `jax.jit` function.

An entry is written from a fresh compile only: an executable that XLA:CPU itself loaded from
JAX's cache does not serialize whole, so a program that JAX's cache already holds runs from
there and is stored the next time it compiles. A loaded program that fails on its first run is
deleted and compiled again. Entries live in a folder per environment (a new rltune or JAX gets
a new folder; the oldest beyond `KEEP_ENVIRONMENTS` are deleted).

Entries are machine code for this machine: like JAX's own cache, the directory must be trusted
(anyone who can write to it can make rltune run code). The metadata JAX pickles with an
executable is read by an unpickler that resolves only the classes a real entry names, and the
result's tree structure is stored as JSON, its node types looked up among modules already
imported: a damaged or foreign entry is refused and compiled again.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

FORMAT = 2
SUBDIR = "executables"
KEEP_ENVIRONMENTS = 4  # environment folders kept (the newest): an upgrade leaves no growing pile
# A jax.monitoring duration event per program loaded from here: its load counts as compile time
# where rltune measures that (runner.CompileClock), as the trace and compile it replaces did.
LOAD_EVENT = "/rltune/executable_cache/load_duration"
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# XLA options for a program run a few times per trial (a member's init, the compiled evaluation):
# XLA:CPU's older loop emitters and no expensive LLVM passes compile it ~40 % faster, to the same
# results bit for bit (tests/test_executable_cache.py), and it runs a little slower. Measured on
# one idle core, PPO CartPole: init 1.76 -> 1.11 s, evaluation 1.13 -> 0.63 s (1.1 -> 1.2 ms a
# run). A training segment, which runs for most of a trial, keeps XLA's defaults. Only programs
# compiled through the cache get them (the CPU backend, the cache on); elsewhere a Program is
# the plain jit, compiled with XLA's defaults to the same numbers.
QUICK_COMPILE = (("xla_cpu_use_fusion_emitters", False), ("xla_llvm_disable_expensive_passes", True))

_shapes_only: contextvars.ContextVar[bool] = contextvars.ContextVar("rltune_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only():
    """Inside it (this thread), a Program call returns its output's shapes (`Program.eval_shape`)
    instead of running: `with shapes_only(): abstract = agent.init(config)` traces nothing when
    init's executable is on disk."""
    token = _shapes_only.set(True)
    try:
        yield
    finally:
        _shapes_only.reset(token)


class Program:
    """A jitted function with its compiled executables kept across processes. `name` names the
    program (module-qualified); `static_argnums` are the arguments the jitted function treats as
    static and `context` the values it closes over that shape it: both key the program, as do
    `compiler_options`, the XLA options its compile gets here (with the cache in use: on CPU).

    For programs called a few times per trial (a training segment, an evaluation): a call
    costs ~0.2 ms of Python, against ~0.05 ms through jax.jit's C++ dispatch, so a function
    called once per env step stays a plain jit. rltune's own programs only: the key holds
    rltune's source, not a caller's."""

    def __init__(self, jitted: Callable, name: str, static_argnums: tuple[int, ...] = (), context: tuple = (),
                 compiler_options: tuple[tuple[str, Any], ...] = ()):
        self.jitted = jitted
        self.name = name
        self.static_argnums = frozenset(static_argnums)
        # what the jitted function closes over that decides the program, and XLA's options for it
        self.context = context + ((("compiler_options", compiler_options),) if compiler_options else ())
        self.compiler_options = dict(compiler_options)  # XLA debug options for this program's compile
        self._compiled: dict[Any, Any] = {}  # in-process: signature -> jax.stages.Compiled
        self._unchecked: dict[Any, Path] = {}  # loaded, not run yet: signature -> its entry

    def __call__(self, *args):
        if _shapes_only.get():
            return self.eval_shape(*args)
        directory = _directory()
        if directory is None:
            return self.jitted(*args)
        try:
            static, dynamic, treedef, avals = self._signature(args)
        except TypeError:  # not an array argument (a tracer: called inside a traced function)
            return self.jitted(*args)
        signature = (static, treedef, avals, _config_state())
        compiled = self._compiled.get(signature)
        if compiled is None:
            compiled = self._load_or_compile(directory, args, signature)
            self._compiled[signature] = compiled
        if signature in self._unchecked:
            return self._first_run(signature, compiled, args, dynamic)
        return compiled(*dynamic)

    def _first_run(self, signature, compiled, args, dynamic):
        """A loaded program's first run, checked: one that fails (an entry that does not match
        this process after all) is deleted, and the program compiles as jax.jit would."""
        import jax

        path = self._unchecked.pop(signature)
        try:
            return jax.block_until_ready(compiled(*dynamic))
        except jax.errors.JaxRuntimeError as exc:
            print(f"rltune: cached executable {path.name} failed ({exc}); compiling it again", file=sys.stderr)
            path.unlink(missing_ok=True)
            del self._compiled[signature]
            return self(*args)  # the entry is gone: compiled (and stored, if fresh) as on a miss

    def _signature(self, args):
        """(static args, dynamic args, the dynamic args' tree structure and avals)."""
        import jax

        static = tuple(a for i, a in enumerate(args) if i in self.static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        leaves, treedef = jax.tree.flatten(dynamic)
        return static, dynamic, treedef, tuple(_aval(x) for x in leaves)

    def _path(self, directory: Path, signature) -> Path | None:
        static, treedef, avals, config = signature
        key = program_key(self.name, self.context + static, treedef, avals, config)
        return directory / f"{key}.xla" if key is not None else None

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
                path = self._path(directory, (static, treedef, avals, _config_state()))
                header = _read_header(path) if path is not None else None
                if header is not None:
                    structs = [jax.ShapeDtypeStruct(tuple(shape), dtype, weak_type=weak)
                               for shape, dtype, weak in header["out_avals"]]
                    return jax.tree.unflatten(decode_tree(header["out_tree"]), structs)
            except (TypeError, ValueError, KeyError, AttributeError):
                pass
        positions = [i for i in range(len(args)) if i not in self.static_argnums]

        def with_static(*dynamic):
            full = list(args)
            for i, value in zip(positions, dynamic):
                full[i] = value
            return self.jitted(*full)

        return jax.eval_shape(with_static, *(args[i] for i in positions))

    def _load_or_compile(self, directory: Path, args, signature):
        import jax

        path = self._path(directory, signature)
        if path is not None:
            start = time.perf_counter()
            compiled = _load(path, signature[1])
            if compiled is not None:
                jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - start)
                self._unchecked[signature] = path
                return compiled
        lowered = self.jitted.lower(*args)
        targets = custom_call_targets(lowered.as_text(debug_info=False)) if path is not None else []
        # a host callback's address would not survive a reload: such a program is never stored
        if path is None or not all(t.startswith(_LAPACK) for t in targets):
            return self._with_options(lambda options: lowered.compile(compiler_options=options))
        compiled, fresh = self._with_options(lambda options: _compile_counted(lowered, options))
        out_avals = getattr(getattr(compiled, "_executable", None), "out_avals", None)
        if fresh and out_avals is not None:
            _store(path, compiled, self.name, targets,
                   [(list(a.shape), str(a.dtype), bool(a.weak_type)) for a in out_avals])
        return compiled

    def _with_options(self, compile_: Callable[[dict | None], Any]):
        """`compile_(this program's XLA options)`; `compile_(None)` (XLA's defaults) where XLA
        rejects them, as it does an option it does not know (an older or a later XLA): the same
        program, compiled more slowly. A program that fails to compile fails twice, then raises."""
        import jax

        if not self.compiler_options:
            return compile_(None)
        try:
            return compile_(self.compiler_options)
        except jax.errors.JaxRuntimeError:
            return compile_(None)


def program(name: str, static_argnums: tuple[int, ...] = (), compiler_options: tuple[tuple[str, Any], ...] = ()):
    """Decorator: `jax.jit(fun, static_argnums=...)` kept in the executable cache."""
    import jax

    def wrap(fun):
        return functools.wraps(fun)(Program(jax.jit(fun, static_argnums=static_argnums), name, static_argnums,
                                            compiler_options=compiler_options))

    return wrap


# ---------------------------------------------------------------- where, and whether
def _directory() -> Path | None:
    """This process's entries' folder, when it uses the cache: the compile cache on, the CPU
    backend, a JAX with what this module needs, no jax_disable_jit and no NaN/Inf checks."""
    from rltune import compile_cache

    base = compile_cache.enable()
    if base is None or not _usable():
        return None
    import jax

    values = jax.config.values
    if values.get("jax_disable_jit") or values.get("jax_debug_nans") or values.get("jax_debug_infs"):
        return None
    return _environment_folder(base / SUBDIR)


@functools.lru_cache(maxsize=1)
def _usable() -> bool:
    """The CPU backend, and the JAX names this module relies on (some private) present."""
    try:
        import jax
        from jax._src import config as jax_config
        from jax._src import tree_util
        from jax._src.lax import linalg  # noqa: F401
        from jax.experimental import serialize_executable

        needed = (jax.typeof, serialize_executable._JaxPjrtUnpickler, serialize_executable.serialize,
                  jax_config.trace_context, tree_util.default_registry,
                  jax.tree.structure(0).from_node_data_and_children, jax.stages.Compiled)
    except (ImportError, AttributeError):
        return False
    return all(n is not None for n in needed) and jax.default_backend() == "cpu"


_folder: Path | None = None


def _environment_folder(root: Path) -> Path:
    """root/<environment hash>; the first time a process uses one, folders of other
    environments beyond the newest `KEEP_ENVIRONMENTS` are deleted."""
    global _folder
    if _folder is None or _folder.parent != root:
        digest = hashlib.sha256(json.dumps(environment(), sort_keys=True).encode()).hexdigest()[:20]
        _folder = root / digest
        _prune(root, keep=_folder)
    return _folder


def _prune(root: Path, keep: Path) -> None:
    try:
        others = sorted((p for p in root.iterdir() if p.is_dir() and p != keep),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in others[KEEP_ENVIRONMENTS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _config_state():
    """JAX's settings that change what a trace produces, as they are now (a process may change
    one between calls, as jax.jit's own cache allows for)."""
    from jax._src import config as jax_config

    return jax_config.trace_context()


# ---------------------------------------------------------------- the key
def program_key(name: str, static: tuple, treedef, avals: tuple, config=None) -> str | None:
    """The hex key of a program, or None when a static argument has no stable description."""
    parts = [_describe(s) for s in static]
    if any(p is None for p in parts):
        return None
    text = json.dumps({"format": FORMAT, "name": name, "static": parts, "tree": str(treedef),
                       "avals": [list(a) for a in avals], "config": _stable_config(config),
                       "environment": environment()})
    if " at 0x" in text:  # an object address in the tree: not stable across processes
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _stable_config(config) -> list[str] | None:
    """`_config_state()` as text that reads the same in every process: an object shown by its
    address (JAX's axis environment, empty for a call outside any trace) by its type."""
    if config is None:
        return None
    return [type(v).__name__ if " at 0x" in repr(v) else repr(v) for v in config]


def _describe(value) -> str | None:
    import inspect

    if inspect.ismethod(value) or isinstance(value, functools.partial):
        return None  # its object's or arguments' state is not in its name
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
            # XLA's compiler options (XLA_PYTHON_CLIENT_* size an accelerator's memory pool: not a program)
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
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
    """XLA:CPU compiles for the host's instruction set: its architecture, model and features
    (x86: "model name", "flags"; ARM: "CPU implementer", "CPU part", "Features")."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = [platform.processor()]
    fields = ("model name", "flags", "CPU implementer", "CPU part", "Features")
    wanted = sorted({line for line in lines if line.startswith(fields)})
    return hashlib.sha256("\n".join([platform.machine(), *wanted]).encode()).hexdigest()


# ---------------------------------------------------------------- compile, store, load
_events = threading.local()  # on this thread: compile requests and JAX cache hits (jax.monitoring)
_listening = False
_listen_lock = threading.Lock()
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _count_compile(event: str, duration: float, **_) -> None:
    if event == _COMPILE_EVENT:  # JAX times its compile-or-load under this name: a hit included
        _events.compiles = getattr(_events, "compiles", 0) + 1


def _count_cache_hit(event: str, **_) -> None:
    if event == _CACHE_HIT_EVENT:
        _events.hits = getattr(_events, "hits", 0) + 1


def _compile_counted(lowered, compiler_options: dict | None = None):
    """(compiled, fresh): `lowered.compile()`, and whether XLA compiled it here. JAX may instead
    hand back an executable from its persistent cache (a hit event) or its memory (no compile
    event), which XLA:CPU does not serialize whole (one reloaded from such an entry fails when
    run): only a fresh one is stored, so a program JAX's cache already holds is not."""
    global _listening
    import jax

    with _listen_lock:
        if not _listening:
            jax.monitoring.register_event_duration_secs_listener(_count_compile)
            jax.monitoring.register_event_listener(_count_cache_hit)
            _listening = True
    compiles, hits = getattr(_events, "compiles", 0), getattr(_events, "hits", 0)
    compiled = lowered.compile(compiler_options=compiler_options)
    fresh = getattr(_events, "compiles", 0) > compiles and getattr(_events, "hits", 0) == hits
    return compiled, fresh


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
                  "out_avals": out_avals, "sha256": hashlib.sha256(payload).hexdigest()}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(header).encode() + b"\n" + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except Exception as exc:  # noqa: BLE001 - a cache: the program runs either way
        print(f"rltune: executable of {name} not cached ({type(exc).__name__}: {exc})", file=sys.stderr)


def _read_header(path: Path) -> dict | None:
    try:
        with open(path, "rb") as file:
            header = json.loads(file.readline())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) and header.get("format") == FORMAT else None


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
        unloaded, args_info_flat, no_kwargs = _unpickler(io.BytesIO(payload), jax.devices()[0].client).load()
        in_tree = jax.tree.structure((tuple(jax.tree.unflatten(treedef, [0] * treedef.num_leaves)), {}))
        args_info = in_tree.unflatten(args_info_flat)
        return jax.stages.Compiled(unloaded.load(), [], args_info, out_tree, no_kwargs=no_kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign entry: compile instead
        print(f"rltune: cached executable {path.name} not loaded ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


# What the metadata of JAX's executable serialization names (jax 0.10): nothing else is resolved.
_PICKLED_NAMES = frozenset({
    ("jax", "P"), ("jax._src.core", "ManualAxisType"), ("jax._src.core", "MemorySpace"),
    ("jax._src.core", "ShapedArray"), ("jax._src.interpreters.pxla", "AllArgsInfo"),
    ("jax._src.interpreters.pxla", "UnloadedMeshExecutable"), ("jax._src.layout", "Layout"),
    ("jax._src.linear_util", "DebugInfo"), ("jax._src.mesh", "AbstractMesh"), ("jax._src.mesh", "AxisType"),
    ("jax._src.named_sharding", "_unpickle_named_sharding"),
    ("jax._src.sharding_impls", "_unpickle_single_device_sharding"), ("jax._src.stages", "ArgInfo"),
    ("jaxlib._jax", "DeviceList"), ("numpy", "dtype"), ("builtins", "frozenset"), ("builtins", "set"),
    ("builtins", "slice"),
})


def _unpickler(file, backend):
    """JAX's executable unpickler, resolving only `_PICKLED_NAMES`."""
    from jax.experimental.serialize_executable import _JaxPjrtUnpickler

    class Restricted(_JaxPjrtUnpickler):
        def find_class(self, module, name):
            if (module, name) not in _PICKLED_NAMES:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a cached executable")
            return super().find_class(module, name)

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


def _node_type(name: str) -> type:
    """A pytree node type by name, among the modules this process has imported (nothing is
    imported for an entry)."""
    module_name, qualname = name.split(":")
    if (module_name, qualname) == ("builtins", "NoneType"):
        return type(None)
    found: Any = sys.modules.get(module_name)
    if found is None:
        raise ValueError(f"pytree node type {name}: its module is not imported")
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
