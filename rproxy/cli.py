"""The ``rproxy`` command: ``rproxy check FILE`` validates a config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; return the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="rproxy",
        description="rproxy tools. Run the proxy itself with "
        "'twistd -n rproxy --config FILE'.",
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
