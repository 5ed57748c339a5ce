"""rproxy's build backend: setuptools' own, plus the twistd plugin in
editable wheels.

twistd finds plugins by listing the directories on C{twisted.plugins.__path__},
which Twisted makes from the entries of C{sys.path} (each entry's
C{twisted/plugins}).  A regular install puts C{twisted/plugins/rproxy_plugin.py}
into site-packages' C{twisted/plugins}, so it is found.  An editable install
by setuptools puts a finder hook on C{sys.meta_path} instead (or, in other
modes, a path that depends on the layout), which makes C{import rproxy} work
but puts no directory holding the plugin on C{twisted.plugins.__path__}:
C{twistd rproxy} would be an unknown command.

So the editable wheel also carries the plugin module itself, installed as a
real file where a regular install puts it.  The module only names
C{rproxy.tap}, so the copy stays right while rproxy's code is edited; pip
records it and uninstalls it with the rest.  This uses the standard hooks
(PEP 517, PEP 660) and the wheel format only, not setuptools' internals.

The other change: a build that compiles with mypyc type-checks rproxy as
C{mypy} does, which follows C{rproxy/__init__.py} to every dependency, so the
build environment gets the runtime dependencies too (read from setup.cfg,
listed once), unless RPROXY_PURE asks for a pure build.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403 (every other hook as is)

__all__ = [
    *build_meta.__all__,
    "build_editable",
    "get_requires_for_build_editable",
    "get_requires_for_build_wheel",
]

#: Files copied into every editable wheel, as paths in the wheel (and in the
#: checkout).
PLUGIN_FILES = ("twisted/plugins/rproxy_plugin.py",)
HERE = Path(__file__).resolve().parent.parent


def typing_requirements() -> list[str]:
    """What the mypyc build's type check needs installed: setup.cfg's
    install_requires (none for a pure build)."""
    if os.environ.get("RPROXY_PURE", "") not in ("", "0"):
        return []
    config = configparser.ConfigParser()
    config.read(HERE / "setup.cfg")
    lines = config.get("options", "install_requires").splitlines()
    return [line.strip() for line in lines if line.strip()]


def get_requires_for_build_wheel(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    """setuptools' requirements and L{typing_requirements}."""
    found: list[str] = build_meta.get_requires_for_build_wheel(config_settings)
    return found + typing_requirements()


def get_requires_for_build_editable(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    """setuptools' requirements and L{typing_requirements}."""
    found: list[str] = build_meta.get_requires_for_build_editable(config_settings)
    return found + typing_requirements()


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, str | list[str]] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable wheel, with L{PLUGIN_FILES} added to it."""
    name: str = build_meta.build_editable(
        wheel_directory, config_settings, metadata_directory
    )
    files = {path: (HERE / path).read_bytes() for path in PLUGIN_FILES}
    add_to_wheel(Path(wheel_directory, name), files)
    return name


def _record_line(path: str, data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"{path},sha256={encoded},{len(data)}\n"


def add_to_wheel(wheel: Path, files: dict[str, bytes]) -> None:
    """Rewrite C{wheel} with C{files} (wheel path -> contents) added and
    listed in its RECORD; files it already holds are left as they are."""
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    present = {info.filename for info, _ in entries}
    added = {path: data for path, data in files.items() if path not in present}
    if not added:
        return
    record = next(
        info.filename
        for info, _ in entries
        if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/RECORD")
    )
    fd, temporary = tempfile.mkstemp(dir=wheel.parent, suffix=".whl")
    os.close(fd)
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target:
        for path, data in added.items():
            target.writestr(path, data)
        for info, data in entries:
            if info.filename == record:
                lines = "".join(_record_line(p, d) for p, d in added.items())
                data = lines.encode() + data
            target.writestr(info, data)
    os.replace(temporary, wheel)
