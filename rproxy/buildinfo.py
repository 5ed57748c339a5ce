"""Which build of rproxy is running: the mypyc-compiled hot path or pure Python.

L{MYPYC_MODULES} is the one list of the modules that C{setup.py} compiles with
mypyc (it reads the list from this file without importing rproxy).
L{build_info} looks at the modules actually imported, so it tells the truth
whatever the build wrote: a compiled module is loaded from an extension
module (C{.so}), a pure one from its C{.py} source.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import site
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

__all__ = ["MYPYC_MODULES", "BuildInfo", "build_info", "version"]

#: The modules compiled with mypyc when a C compiler is there, by import name.
#: setup.py reads this tuple (a literal, one name a line): to compile another
#: module, add its name here and reinstall.
MYPYC_MODULES: tuple[str, ...] = (
    "rproxy.http._grammar",
    "rproxy.http.framing",
    "rproxy.http.chunked",
    "rproxy.http.headers",
    "rproxy._fastwrite",
    "rproxy._protocol",
    "rproxy.attempts",
    "rproxy.http.messages",
    "rproxy.http.upstream",
    "rproxy.http.keepalive",
    "rproxy.http.filters._chain",
    "rproxy.http._record",
    "rproxy.http._codec",
    "rproxy.http._phase",
    "rproxy.http._answers",
    "rproxy.http._switch",
    "rproxy.http._connecting",
    "rproxy.http.exchange",
    "rproxy.http._h1_writer",
    "rproxy.http._h1_states",
    "rproxy.http._h1_ending",
    "rproxy.http._h1_timers",
    "rproxy.http._h1_tunnel",
    "rproxy.http._h1_reading",
    "rproxy.http._h1_sniff",
    "rproxy.http.h1",
    "rproxy.http.h2.stream",
    "rproxy.http.subrequest",
    "rproxy.http.routing",
    "rproxy.backends",
    "rproxy.queueing",
    "rproxy.http.paths",
    "rproxy.http.filters.rules._view",
    "rproxy.http.filters.rules._match",
    "rproxy.http.filters.rules._rule",
    "rproxy.http.filters.rules._engine",
    "rproxy.limits._local",
    "rproxy.limits.keys",
    "rproxy.limits.limiter",
)

COMPILED = "compiled (mypyc)"
PURE = "pure Python"


@dataclass(frozen=True)
class BuildInfo:
    """
    The build of the running rproxy.

    @ivar version: the installed distribution's version.
    @ivar modules: for each of L{MYPYC_MODULES}, whether the imported module
        is compiled.
    @ivar stale: compiled modules whose C{.py} source is newer than the
        extension module imported instead of it (an in-place build that was
        not redone after an edit).
    """

    version: str
    modules: Mapping[str, bool]
    stale: tuple[str, ...] = ()

    @property
    def compiled(self) -> bool:
        """Whether every module of the list is the compiled one."""
        return bool(self.modules) and all(self.modules.values())

    @property
    def kind(self) -> str:
        """C{"compiled (mypyc)"}, C{"pure Python"}, or a mixed build named."""
        if self.compiled:
            return COMPILED
        if not any(self.modules.values()):
            return PURE
        pure = sorted(name for name, done in self.modules.items() if not done)
        return f"partly compiled (mypyc; pure Python: {', '.join(pure)})"

    def describe(self) -> str:
        """One line: C{"rproxy 0.1.0 compiled (mypyc)"}."""
        return f"rproxy {self.version} {self.kind}"


def version() -> str:
    """The installed rproxy's version, or C{"unknown"} when run uninstalled."""
    try:
        return metadata.version("rproxy")
    except metadata.PackageNotFoundError:
        return "unknown"


def _origin(module: ModuleType) -> str | None:
    spec = module.__spec__
    return spec.origin if spec is not None else getattr(module, "__file__", None)


def _is_extension(origin: str | None) -> bool:
    return origin is not None and origin.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )


def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return tuple(os.path.join(os.path.realpath(path), "") for path in found)


def _is_stale(extension: str) -> bool:
    """Whether an in-place compiled module is older than its source.  An
    installed copy never is: the installer sets the files' times."""
    if os.path.realpath(extension).startswith(_installed_dirs()):
        return False
    # rproxy/http/framing.cpython-311-x86_64-linux-gnu.so -> rproxy/http/framing.py
    directory, name = os.path.split(extension)
    source = os.path.join(directory, name.split(".", 1)[0] + ".py")
    try:
        return os.stat(source).st_mtime > os.stat(extension).st_mtime
    except OSError:
        return False


def build_info(
    import_module: Callable[[str], ModuleType] = importlib.import_module,
) -> BuildInfo:
    """
    Import each of L{MYPYC_MODULES} (with C{import_module}) and report which
    build they are.
    """
    modules: dict[str, bool] = {}
    stale: list[str] = []
    for name in MYPYC_MODULES:
        origin = _origin(import_module(name))
        modules[name] = _is_extension(origin)
        if origin is not None and modules[name] and _is_stale(origin):
            stale.append(name)
    return BuildInfo(version(), modules, tuple(stale))
