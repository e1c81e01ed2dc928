"""wasmtime plumbing: one engine (fuel on, component model), compiled components cached on
disk, and a sandboxed instance whose every call has a fuel budget and whose memory is capped.
Nothing else is linked into a policy: no WASI, no filesystem, network, clock or environment;
the only import is a sink for its log lines."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import wasmtime
import wasmtime.component as wc

from .errors import PolicyLoadError, PolicyTrap

log = logging.getLogger("citus_ha")

#: About one wasm instruction per unit: 2e9 is 1-3 s of guest work on a small machine, far
#: beyond any real call (a heartbeat of 10000 groups needs a few hundred million).
DEFAULT_FUEL = 2_000_000_000
DEFAULT_MAX_MEMORY = 256 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds on every instance: `fuel` per call, `max_memory` bytes of linear memory."""

    fuel: int = DEFAULT_FUEL
    max_memory: int = DEFAULT_MAX_MEMORY


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"


#: Artifacts are only valid for the wasmtime that wrote them.
_WASMTIME = _wasmtime_version()
DEFAULT_LIMITS = Limits()
_ENGINE: Optional[wasmtime.Engine] = None
_COMPILED: Dict[str, wc.Component] = {}


def engine() -> wasmtime.Engine:
    global _ENGINE
    if _ENGINE is None:
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.wasm_component_model = True
        _ENGINE = wasmtime.Engine(cfg)
    return _ENGINE


def _cache_dir() -> Optional[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if "HOME" in os.environ else None)
    return Path(base, "citus-ha", "python") if base else None


def compile_component(wasm: bytes, source: str) -> Tuple[wc.Component, str]:
    """The compiled component and its sha256. Compiling takes about a second, so the result
    is kept in memory and serialized under the user's cache directory (keyed by the bytes'
    hash and the wasmtime version); a cached artifact loads in milliseconds."""
    if len(wasm) < 8 or wasm[:4] != b"\0asm" or wasm[6:8] != b"\x01\x00":
        raise PolicyLoadError(f"{source}: not a WebAssembly component")
    digest = hashlib.sha256(wasm).hexdigest()
    hit = _COMPILED.get(digest)
    if hit is not None:
        return hit, digest
    cache = _cache_dir()
    path = cache / f"{digest}-wasmtime-{_WASMTIME}.cwasm" if cache else None
    component: Optional[wc.Component] = None
    if path is not None and path.exists():
        try:
            component = wc.Component.deserialize(engine(), path.read_bytes())
        except wasmtime.WasmtimeError:
            component = None
    if component is None:
        try:
            component = wc.Component(engine(), wasm)
        except wasmtime.WasmtimeError as e:
            raise PolicyLoadError(f"{source}: not a valid component: {e}") from e
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent)
                with os.fdopen(fd, "wb") as f:
                    f.write(component.serialize())
                os.replace(tmp, path)
            except OSError:
                pass
    _COMPILED[digest] = component
    return component, digest


def exports_of(component: wc.Component) -> Tuple[str, ...]:
    return tuple(component.type.exports(engine()))


def imports_of(component: wc.Component) -> Tuple[str, ...]:
    return tuple(component.type.imports(engine()))


class _TypedFunc:
    """A component function with its parameter and result types looked up once.

    wasmtime-py's `Func.__call__` asks the engine for the function's type on every call and
    rebuilds every type object from it, which costs more than the call itself for the hot
    paths' single-string arguments (3-4x). The types of an export never change, so they are
    read once here and the call goes straight to the C API, converting values exactly as
    `Func.__call__` does (wasmtime 50.0.1, the version this package pins).
    """

    __slots__ = ("_cases", "_func", "_params", "_result")

    def __init__(self, func: wc.Func, store: wasmtime.Store) -> None:
        fty = func.type(store)
        self._func = func
        self._params = [t for _, t in fty.params]
        self._result = fty.result
        # A `result<..>` is lifted here with its two case types read once, and always comes
        # back tagged (`Variant('ok'|'err', payload)`), whatever its payload types.
        self._cases = ((self._result.ok, self._result.err)
                       if isinstance(self._result, wc.ResultType) else None)

    def __call__(self, store: wasmtime.Store, *params: Any) -> Any:
        from ctypes import byref, pointer

        from wasmtime import _ffi as ffi
        from wasmtime.component._enter import maybe_raise_last_exn

        n = len(params)
        if n != len(self._params):
            raise TypeError(f"{n} parameters given, {len(self._params)} expected")
        param_capi = (ffi.wasmtime_component_val_t * n)()
        lowered = 0
        try:
            for i, (ty, val) in enumerate(zip(self._params, params)):
                ty.convert_to_c(store, val, pointer(param_capi[i]))
                lowered += 1
            if self._result is None:
                err = ffi.wasmtime_component_func_call(byref(self._func._func), store._context(),
                                                       param_capi, n, None, 0)
                result = None
            else:
                space = ffi.wasmtime_component_val_t()
                err = ffi.wasmtime_component_func_call(byref(self._func._func), store._context(),
                                                       param_capi, n, byref(space), 1)
            if err:
                error = wasmtime.WasmtimeError._from_ptr(err)
                maybe_raise_last_exn()
                raise error
            if self._cases is not None:
                return self._lift_result(space)
            if self._result is not None:
                result = self._result.convert_from_c(space)
            return result
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(byref(param_capi[i]))


    def _lift_result(self, space: Any) -> wc.Variant:
        from wasmtime import _ffi as ffi

        assert self._cases is not None
        ok = bool(space.of.result.is_ok)
        ty = self._cases[0] if ok else self._cases[1]
        tag = "ok" if ok else "err"
        if ty is None:
            return wc.Variant(tag, None)
        ptr = space.of.result.val
        payload = ty.convert_from_c(ptr.contents)
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_BOOL
        ptr.contents.of.boolean = False
        ffi.wasmtime_component_val_delete(ptr)
        return wc.Variant(tag, payload)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR}


class Instance:
    """One instance in its own Store. Any error from inside a call is a trap after which this
    Store must not be used again (the caller replaces it)."""

    def __init__(self, component: wc.Component, interface: str, label: str, limits: Limits,
                 host_interfaces: Tuple[str, ...] = ()) -> None:
        self.label = label
        self.limits = limits
        linker = wc.Linker(engine())
        with linker.root() as root:
            for name in host_interfaces:
                with root.add_instance(name) as inst:
                    if name.split("@")[0].endswith("/host"):
                        inst.add_func("log", self._log)
        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=limits.max_memory, instances=8, tables=8, memories=2)
        self.store.set_fuel(limits.fuel)
        try:
            self._instance = linker.instantiate(self.store, component)
        except wasmtime.WasmtimeError as e:
            raise PolicyLoadError(f"{label}: cannot instantiate: {e}") from e
        self._iface = self._instance.get_export_index(self.store, interface)
        if self._iface is None:
            raise PolicyLoadError(f"{label}: does not export {interface}")
        self._funcs: Dict[str, Callable[..., Any]] = {}
        self.dead = False

    def _log(self, _store: Any, level: Any, message: str) -> None:
        log.log(_LEVELS.get(str(level), logging.INFO), "%s", message,
                extra={"policy": self.label})

    def func(self, name: str) -> Callable[..., Any]:
        f = self._funcs.get(name)
        if f is None:
            idx = self._instance.get_export_index(self.store, name, self._iface)
            fn = self._instance.get_func(self.store, idx) if idx is not None else None
            if fn is None:
                raise PolicyLoadError(f"{self.label}: does not export {name}")
            self._funcs[name] = f = _TypedFunc(fn, self.store)
        return f

    def call(self, name: str, *args: Any) -> Any:
        if self.dead:
            raise PolicyTrap("this instance trapped before and cannot be entered", self.label)
        f = self.func(name)
        self.store.set_fuel(self.limits.fuel)
        try:
            return f(self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            self.dead = True
            text = str(e)
            if "fuel" in text:
                why = "call exceeded its fuel budget"
            elif "unreachable" in text:
                why = "the policy panicked or ran out of memory (wasm `unreachable`)"
            else:
                why = text.splitlines()[0] if text else type(e).__name__
            log.error("policy trapped in %s: %s", name, why, extra={"policy": self.label})
            raise PolicyTrap(f"{name}: {why}", self.label) from e
