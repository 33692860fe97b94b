"""The ``clp`` command. Entry points only: no math lives here (STYLE.md principle 1).

Each command group registers itself from its own module; errors from bad input
(``ValueError``) are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from clp_cli import clp_min_cmd, theory_cmd, toy_cmd


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (exit status 2), like every other refusal."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="clp", description="Check and teach Conditional Language Policies.")
    groups = parser.add_subparsers(dest="group", required=True)
    theory_cmd.add_parser(groups)
    toy_cmd.add_parser(groups)
    clp_min_cmd.add_parsers(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ValueError as err:
        print(f"clp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
