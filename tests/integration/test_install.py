"""rproxy as installed in the tests' own environment: twistd finds the plugin
and the commands name the build from a directory outside the checkout, with
nothing but the installation on the path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rproxy import build_info
from tests.integration.helpers import TWISTD, start_proxy, tcp_config

BIN = Path(sys.executable).parent


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """An environment that finds rproxy only through its installation (no
    PYTHONPATH, a working directory outside the checkout)."""
    try:
        metadata.distribution("rproxy")
    except metadata.PackageNotFoundError:
        pytest.skip("rproxy is not installed here (pip install -e .)")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _command(script: str, fallback: list[str]) -> list[str]:
    """The console script installed beside this interpreter, as a user runs
    it, or the same entry point through the interpreter."""
    path = BIN / script
    return [str(path)] if path.exists() else fallback


def test_twistd_finds_the_rproxy_plugin_from_any_directory(
    installed: dict[str, str], tmp_path: Path
) -> None:
    """twistd rproxy --help prints rproxy's options outside the checkout."""
    out = _run([*_command("twistd", TWISTD), "rproxy", "--help"], installed, tmp_path)
    assert "Usage: twistd [options] rproxy --config FILE" in out
    assert "Run rproxy, a reverse proxy and load balancer" in out
    assert "--demo-backends" in out


def test_rproxy_version_names_the_installed_build(
    installed: dict[str, str], tmp_path: Path
) -> None:
    """rproxy --version prints the version and the build that the installed
    package imports."""
    cli = [sys.executable, "-m", "rproxy.cli"]
    out = _run([*_command("rproxy", cli), "--version"], installed, tmp_path)
    probe = "import rproxy; print(rproxy.build_info().describe())"
    expected = _run([sys.executable, "-c", probe], installed, tmp_path)
    assert out == expected
    assert re.fullmatch(r"rproxy \S+ (compiled \(mypyc\)|pure Python)\n", out), out


def test_twistd_start_log_names_the_build(tmp_path: Path) -> None:
    """twistd rproxy logs its version and build when it starts."""
    config = tmp_path / "rproxy.toml"
    config.write_text(tcp_config([9], extra='[pools.p.health]\ncheck = "none"'))
    running = start_proxy(config)
    output = running.stop()
    info = build_info()
    assert f"rproxy {info.version}, {info.kind}" in output
