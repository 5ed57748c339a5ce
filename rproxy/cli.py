"""The ``rproxy`` command: ``rproxy check FILE`` validates a config,
``rproxy --version`` names the version and the build (compiled or pure)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rproxy.buildinfo import build_info
from rproxy.config import Config, ConfigError, load_config


def summary(config: Config) -> str:
    """
    One line saying what C{config} holds.
    """
    backends = sum(len(pool.backends) for pool in config.pools)

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"{config.source}: ok: {count(len(config.listeners), 'listener')}, "
        f"{count(len(config.pools), 'pool')}, {count(backends, 'backend')}"
    )


class _Version(argparse.Action):
    """``--version``: print L{BuildInfo.describe} (and any stale compiled
    module on stderr), then exit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        info = build_info()
        print(info.describe())
        for name in info.stale:
            print(
                f"rproxy: warning: {name} is compiled from an older source; "
                "rebuild with 'pip install -e .'",
                file=sys.stderr,
            )
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; return the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="rproxy",
        description="rproxy tools. Run the proxy itself with "
        "'twistd -n rproxy --config FILE'.",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="print the version and whether it is compiled (mypyc) or pure Python",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="validate a config file without starting anything"
    )
    check.add_argument("file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.file)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(summary(config))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
