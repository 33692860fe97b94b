"""The ``clp`` command. Entry points only: no math lives here (STYLE.md principle 1).

Each command group registers itself from its own module; errors from bad input
(``ValueError``) and from the operating system (``OSError``: missing, unreadable or
unwritable paths) are printed as one line and exit with status 2, never a traceback.
``clp theory`` and ``clp toy`` build their parsers without importing torch: the
options of ``clp train`` (read from TrainConfig, which imports torch) are only
built when a clp_min command or the top-level help is asked for.
"""
from __future__ import annotations

import argparse
import os
import sys

from clp_cli import clp_min_cmd, oracle_cmd, theory_cmd, toy_cmd
from theory.output_folder import refuse_if_held


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default (unless it states one), and shows one spelling."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        shown = not unset and action.option_strings  # 0 is a default to show (it == False)
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text

    def _format_action_invocation(self, action):
        hyphen = [s for s in action.option_strings if "_" not in s]
        if action.option_strings and len(hyphen) < len(action.option_strings):
            action = argparse.Action(hyphen, action.dest, nargs=action.nargs, metavar=action.metavar,
                                     required=action.required, help=action.help)
        return super()._format_action_invocation(action)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (exit status 2), like every other refusal.

    Flags are spelled with hyphens (``--prompt-len``); the underscore spelling (``--prompt_len``)
    is accepted as an alias everywhere, so commands written either way keep working. The help
    shows the hyphen spelling and every default. Sub-commands inherit this class.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        spellings = []
        for name in names:
            if name.startswith("--") and ("_" in name or "-" in name[2:]):
                hyphen, underscore = "--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")
                spellings += [s for s in (hyphen, underscore) if s not in spellings]
            else:
                spellings.append(name)
        if any(s.startswith("--") for s in spellings) and "dest" not in kwargs:
            kwargs["dest"] = next(s for s in spellings if s.startswith("--"))[2:].replace("-", "_")
        return super().add_argument(*spellings, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


LIGHT_GROUPS = ("theory", "toy")  # their parsers need no torch
EARLY_OUT = {"train": "runs/train", "reproduce": "runs/reproduce"}  # their --out defaults (TrainConfig, reproduce)


def refuse_busy_folder(argv: list[str]) -> None:
    """A second writer is refused before the parsers import torch (seconds): the --out of ``clp train``
    and ``clp reproduce`` is read from the raw arguments and its lock tested. The lock itself is taken
    later (theory.output_folder); under torchrun only rank 0 holds it, so ranks skip this check."""
    if not argv or argv[0] not in EARLY_OUT or "WORLD_SIZE" in os.environ or "-h" in argv or "--help" in argv:
        return
    out = EARLY_OUT[argv[0]]
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
        elif arg.startswith("--out="):
            out = arg.split("=", 1)[1]
    refuse_if_held(out)
PROGRESS_EVERY_S = "10"  # redirected progress: one line per bar every 10 s at most


class LineProgress:
    """stderr when it is not a terminal (a log file, a pipe): progress bars become whole lines.

    tqdm refreshes a bar by writing ``"\r" + bar``; in a log that leaves one endless line, and a
    message written after it (an error from another process of the same run) lands on that line.
    Here each refresh ends its line, and the lone newline tqdm writes when a bar closes is dropped.
    """

    def __init__(self, stream):
        self.stream, self.after_bar = stream, False

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            self.after_bar = True
            text = text[1:].rstrip() + "\n" if text.strip() else ""
        elif text == "\n" and self.after_bar:
            text = ""
        else:
            self.after_bar = False
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="clp", description="Check and teach Conditional Language Policies.")
    groups = parser.add_subparsers(dest="group", required=True)
    theory_cmd.add_parser(groups)
    toy_cmd.add_parser(groups)
    light = bool(argv) and argv[0] in LIGHT_GROUPS
    clp_min_cmd.add_parsers(groups, with_train_options=not light)
    oracle_cmd.add_parser(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        refuse_busy_folder(argv)
    except ValueError as err:
        print(f"clp: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    stderr = sys.stderr
    if not stderr.isatty():  # progress still shows when redirected, as lines (children inherit the interval)
        os.environ.setdefault("TQDM_MININTERVAL", PROGRESS_EVERY_S)
        sys.stderr = LineProgress(stderr)
    try:
        return _run(args)
    finally:
        sys.stderr = stderr


def _run(args) -> int:
    try:
        return args.run(args) or 0
    except ValueError as err:
        print(f"clp: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"clp: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except RecursionError:
        print("clp: error: input nested too deeply", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
