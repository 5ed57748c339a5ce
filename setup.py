"""Build rproxy: the hot-path modules compiled with mypyc, or pure Python.

The metadata and dependencies are in setup.cfg.  This file decides one thing:
whether the modules named in rproxy/buildinfo.py's MYPYC_MODULES are compiled
with mypyc.  They are when a C compiler is there and the compile works; the
package is pure Python (the same code, interpreted) when there is no compiler,
when mypyc or the C compile fails, or when RPROXY_PURE is set to anything but
"" or "0".  Either way the build says which in one line starting "rproxy:".

A pure build also removes compiled modules an earlier in-place (editable)
build left next to the sources, so that nothing compiled is imported.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
#: The shared library mypyc builds for the group: rproxy__mypyc.<suffix>.
GROUP = "rproxy"
#: Stands for the mypyc extensions until build_ext runs mypyc, so that asking
#: for metadata does not type-check and generate C each time.
PLACEHOLDER = Extension("rproxy.__mypyc_pending__", sources=[])


def say(message: str) -> None:
    print(f"rproxy: {message}", file=sys.stderr, flush=True)


def mypyc_modules() -> list[str]:
    """The names in rproxy/buildinfo.py's MYPYC_MODULES (read, not imported:
    importing rproxy needs its dependencies, which a build may not have)."""
    source = HERE / "rproxy" / "buildinfo.py"
    for node in ast.parse(source.read_text()).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "MYPYC_MODULES"
            and node.value is not None
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit(f"rproxy: no MYPYC_MODULES tuple in {source}")


def module_path(name: str) -> str:
    return os.path.join(*name.split(".")) + ".py"


def extension_files(names: list[str], group: bool) -> list[Path]:
    """Compiled modules for C{names} (and the group library if C{group})
    lying in the source tree, for any Python version."""
    found = list(HERE.glob(f"{GROUP}__mypyc.*")) if group else []
    for name in names:
        stem = HERE / module_path(name)[: -len(".py")]
        found.extend(stem.parent.glob(f"{stem.name}.*"))
    suffixes = (".so", ".pyd")
    return [path for path in found if path.suffix in suffixes]


def remove_in_place_builds(names: list[str], group: bool = False) -> None:
    for path in extension_files(names, group):
        path.unlink()
        say(f"removed {path.relative_to(HERE)} (an earlier in-place build)")


def all_rproxy_modules() -> list[str]:
    return [
        ".".join(path.relative_to(HERE).with_suffix("").parts)
        for path in (HERE / "rproxy").rglob("*.py")
    ]


def why_pure() -> str | None:
    """Why this build cannot or must not compile, or None if it can try."""
    if os.environ.get("RPROXY_PURE", "") not in ("", "0"):
        return "RPROXY_PURE is set"
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC")
    if compiler and shutil.which(shlex.split(compiler)[0]) is None:
        return f"no C compiler ({shlex.split(compiler)[0]!r} not found)"
    return None


def mypycify_modules(names: list[str]) -> list[Extension]:
    """The mypyc extensions for C{names}, or [] (with the reason said) when
    mypyc cannot build them."""
    try:
        from mypyc.build import mypycify
    except ImportError:
        say("building pure Python (mypyc is not installed)")
        return []
    try:
        extensions = mypycify([module_path(name) for name in names], group_name=GROUP)
    except SystemExit:
        # mypy found errors, and has listed them above.
        say("building pure Python (mypyc failed: mypy reported errors)")
        return []
    except Exception as error:
        say(f"building pure Python (mypyc failed: {error!r})")
        return []
    say(f"compiling with mypyc: {', '.join(names)}")
    return list(extensions)


class BuildExt(build_ext):
    """Runs mypyc when the extensions are built, and falls back to pure
    Python when the C compile fails."""

    def finalize_options(self) -> None:
        if self.distribution.ext_modules == [PLACEHOLDER]:
            modules = mypycify_modules(mypyc_modules()) if building() else []
            self.distribution.ext_modules = modules
        super().finalize_options()

    def built_files(self, inplace: bool) -> list[Path]:
        """The compiled modules this command wrote, in build/ and in place."""
        paths = {Path(output) for output in self.get_outputs()}
        # setuptools' run() clears self.inplace while it builds.
        saved, self.inplace = self.inplace, inplace
        try:
            paths.update(Path(self.get_ext_fullpath(e.name)) for e in self.extensions)
        finally:
            self.inplace = saved
        return sorted(path for path in paths if path.exists())

    def run(self) -> None:
        inplace = bool(self.inplace)
        try:
            super().run()
            # mypyc rewrote the C from the current sources; build_ext skips a
            # module whose C did not change, and its compiled module then
            # stands for the current source too: say so with its mtime, which
            # rproxy.buildinfo compares with the source's to find stale ones.
            for path in self.built_files(inplace):
                os.utime(path)
        except Exception as error:
            for path in self.built_files(inplace):
                path.unlink()
            self.extensions = []
            lines = str(error).strip().splitlines() or [type(error).__name__]
            say(f"building pure Python (the C compile failed: {lines[-1]})")


def building() -> bool:
    """Whether this run builds (a wheel, an editable wheel, extensions),
    rather than only writing metadata."""
    commands = {"bdist_wheel", "editable_wheel", "build", "build_ext", "install"}
    return not commands.isdisjoint(sys.argv[1:])


def ext_modules() -> list[Extension]:
    names = mypyc_modules()
    reason = why_pure()
    if building():
        # A module taken off the list must not stay compiled in the tree.
        remove_in_place_builds(sorted(set(all_rproxy_modules()) - set(names)))
        if reason is not None:
            remove_in_place_builds(names, group=True)
            say(f"building pure Python ({reason})")
    return [PLACEHOLDER] if reason is None else []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildExt})
