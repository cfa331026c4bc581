"""``autospace``: the command-line entry point.

Each area registers its own sub-commands; this module only wires them and turns
the project's input errors into one ``error: ...`` line and exit status 2, and a
run that cannot go on (:class:`~pipeline.errors.RunFailedError`) into one line and
exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from deploy import cli as deploy_cli
from pipeline import cost_cli, run_cli
from pipeline.data import cli as data_cli
from pipeline.errors import RunFailedError
from spaces.errors import UserError

__all__ = ["main", "build_parser", "USER_ERRORS"]

# Every error bad input causes derives from UserError (config, data, spec, checkpoint, registry, cron, lock);
# a missing file named on the command line is one too.
USER_ERRORS = (UserError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autospace",
        description="Evolve NAS search spaces, search them with differentiable supernets, ship the winners.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_cli.register(commands)
    data_cli.register(commands)
    cost_cli.register(commands)
    deploy_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except RunFailedError as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _one_line(message: str) -> str:
    """A multi-line message (one line per bad config field) joined so the user sees one ``error:`` line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip()).replace(":;", ":")


if __name__ == "__main__":
    sys.exit(main())
