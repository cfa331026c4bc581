"""``autospace``: the command-line entry point.

Each area registers its own sub-commands; this module only wires them and turns
the project's input errors into one ``error: ...`` line and exit status 2, a run
that cannot go on (:class:`~pipeline.errors.RunFailedError`) into one line and exit
status 1, and a closed output pipe (``| head``) into a quiet exit with 141, as on SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from deploy import cli as deploy_cli
from pipeline import cost_cli, run_cli, train_cli
from pipeline.data import cli as data_cli
from pipeline.quiet import quiet_third_party
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
    train_cli.register(commands)
    _add_verbose(parser)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` on every command that runs (``data import`` too), where users type it: after the command."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        parser.add_argument("--verbose", action="store_true",
                            help="show third-party warnings and logs (Ray, MLflow, torch deprecations)")
    for group in groups:
        for command in group.choices.values():
            _add_verbose(command)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_third_party(args.verbose)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at interpreter exit
        return code
    except BrokenPipeError:
        # `autospace predict ... | head`: the reader has what it wanted; stop quietly, as on SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
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
