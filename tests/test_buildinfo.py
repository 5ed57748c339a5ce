"""Which build is running (rproxy.buildinfo), rproxy --version, and interpreted
subclasses of classes that may be compiled."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, ModuleType

import pytest

from rproxy import build_info
from rproxy.buildinfo import MYPYC_MODULES, BuildInfo
from rproxy.cli import main
from rproxy.http.framing import HTTPError, Limits, parse_request_head

SO = EXTENSION_SUFFIXES[0]


def fake_import(origins: dict[str, str]) -> Callable[[str], ModuleType]:
    """An import_module that returns a module loaded from C{origins[name]}."""

    def import_module(name: str) -> ModuleType:
        module = ModuleType(name)
        module.__spec__ = ModuleSpec(name, None, origin=origins[name])
        return module

    return import_module


def test_every_module_from_an_extension_is_the_compiled_build() -> None:
    """A module loaded from an extension module counts as compiled."""
    origins = {name: f"/x/{name.replace('.', '/')}{SO}" for name in MYPYC_MODULES}
    info = build_info(fake_import(origins))
    assert info.compiled
    assert info.kind == "compiled (mypyc)"
    assert info.describe().endswith(" compiled (mypyc)")


def test_every_module_from_source_is_the_pure_build() -> None:
    """Modules loaded from .py (or .pyc) files are the pure build."""
    origins = {name: f"/x/{name.replace('.', '/')}.py" for name in MYPYC_MODULES}
    info = build_info(fake_import(origins))
    assert not info.compiled
    assert info.kind == "pure Python"
    assert set(info.modules) == set(MYPYC_MODULES)


def test_a_mixed_build_names_its_pure_modules() -> None:
    """When only some listed modules are compiled, the pure ones are named."""
    first, *rest = MYPYC_MODULES
    origins = {first: f"/x/{first}.py", **{name: f"/x/{name}{SO}" for name in rest}}
    info = build_info(fake_import(origins))
    assert not info.compiled
    assert info.kind == f"partly compiled (mypyc; pure Python: {first})"


def test_a_compiled_module_older_than_its_source_is_stale(tmp_path: Path) -> None:
    """An in-place build not redone after an edit is reported as stale."""
    origins = {}
    for index, name in enumerate(MYPYC_MODULES):
        stem = tmp_path / name.rsplit(".", 1)[-1]
        extension, source = Path(f"{stem}{SO}"), Path(f"{stem}.py")
        extension.write_bytes(b"")
        source.write_text("")
        # The first module's source was edited after the build.
        edited = index == 0
        os.utime(extension, (1000, 1000))
        os.utime(source, (2000, 2000) if edited else (500, 500))
        origins[name] = str(extension)
    info = build_info(fake_import(origins))
    assert info.compiled
    assert info.stale == (MYPYC_MODULES[0],)


def test_an_installed_compiled_module_is_never_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In site-packages the installer sets the files' times, so an older
    compiled module there says nothing about staleness."""
    monkeypatch.setattr(
        "rproxy.buildinfo._installed_dirs", lambda: (os.path.join(tmp_path, ""),)
    )
    origins = {}
    for name in MYPYC_MODULES:
        stem = tmp_path / name.rsplit(".", 1)[-1]
        extension, source = Path(f"{stem}{SO}"), Path(f"{stem}.py")
        extension.write_bytes(b"")
        source.write_text("")
        os.utime(extension, (1000, 1000))
        os.utime(source, (2000, 2000))
        origins[name] = str(extension)
    info = build_info(fake_import(origins))
    assert info.compiled
    assert info.stale == ()


def _function_types(module: ModuleType) -> set[type]:
    return {
        type(value)
        for value in vars(module).values()
        if isinstance(value, FunctionType | BuiltinFunctionType)
        and value.__module__ == module.__name__
    }


def test_the_running_build_is_what_the_functions_are() -> None:
    """build_info() agrees with the type of the functions each listed module
    defines: builtin functions when compiled, Python functions when not."""
    info = build_info()
    checked = 0
    for name in MYPYC_MODULES:
        kinds = _function_types(importlib.import_module(name))
        if not kinds:
            continue  # classes only (rproxy.attempts)
        checked += 1
        expected = BuiltinFunctionType if info.modules[name] else FunctionType
        assert kinds == {expected}, (name, kinds)
    assert checked >= len(MYPYC_MODULES) // 2


def test_version_option_prints_version_and_build(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """rproxy --version prints the version and the build, and exits 0."""
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    info = build_info()
    out = capsys.readouterr().out
    assert out == f"rproxy {info.version} {info.kind}\n"
    assert info.kind in ("compiled (mypyc)", "pure Python")


def test_version_option_warns_of_stale_compiled_modules(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rproxy --version tells on stderr which compiled module is stale."""
    stale = BuildInfo("1.0", {"rproxy.http.framing": True}, ("rproxy.http.framing",))
    monkeypatch.setattr("rproxy.cli.build_info", lambda: stale)
    with pytest.raises(SystemExit):
        main(["--version"])
    captured = capsys.readouterr()
    assert captured.out == "rproxy 1.0 compiled (mypyc)\n"
    assert "rproxy.http.framing is compiled from an older source" in captured.err


class RefusedError(HTTPError):
    """An interpreted subclass of a class compiled in the compiled build."""

    def __init__(self) -> None:
        super().__init__(403, "Forbidden")
        self.note = "by policy"


class SmallLimits(Limits):
    """An interpreted subclass of a compiled dataclass."""

    def describe(self) -> str:
        return f"head up to {self.max_head}"


def test_interpreted_subclass_of_http_error_raises_and_is_caught() -> None:
    """Interpreted code can subclass HTTPError, in either build."""
    with pytest.raises(HTTPError) as caught:
        raise RefusedError()
    assert caught.value.status == 403
    assert str(caught.value) == "403 Forbidden"
    assert caught.value.note == "by policy"  # type: ignore[attr-defined]


def test_interpreted_subclass_of_limits_is_used_by_the_parser() -> None:
    """An interpreted subclass of Limits is read by the (compiled) parser."""
    limits = SmallLimits(max_target=4)
    assert limits.describe() == "head up to 16384"
    assert parse_request_head(b"GET /ab HTTP/1.1\r\nHost: a\r\n\r\n", limits)
    with pytest.raises(HTTPError) as caught:
        parse_request_head(b"GET /abcdef HTTP/1.1\r\nHost: a\r\n\r\n", limits)
    assert caught.value.status == 414
