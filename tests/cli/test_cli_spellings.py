"""One flag spelling everywhere: hyphens shown, underscores accepted; every help shows its defaults.

Walks the whole parser tree of ``clp`` (every subcommand, the clp_min ones with all of TrainConfig's
options), so a command added later is checked too.
"""
from __future__ import annotations

import argparse

import pytest

from clp_cli.main import build_parser, main


def subcommands(parser, path=()):
    """``(path, parser)`` for every (sub)command below ``parser``."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


def long_options(parser):
    return [a for a in parser._actions if any(s.startswith("--") for s in a.option_strings) and a.dest != "help"]


COMMANDS = list(subcommands(build_parser(["train"])))


def test_the_tree_is_walked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"train", "eval", "reproduce", "theory solve", "theory front", "toy claims"} <= names


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) or "clp" for p, _ in COMMANDS])
def test_both_spellings_of_every_multiword_flag_are_accepted(path, parser):
    for action in long_options(parser):
        for flag in [s for s in action.option_strings if s.startswith("--")]:
            words = flag[2:]
            if "-" in words or "_" in words:
                assert {f"--{words.replace('_', '-')}", f"--{words.replace('-', '_')}"} <= set(action.option_strings), \
                    (path, action.option_strings)


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) or "clp" for p, _ in COMMANDS])
def test_help_shows_one_spelling_and_every_default(path, parser):
    text = parser.format_help()
    for action in long_options(parser):
        hyphen = [s for s in action.option_strings if "_" not in s]
        assert hyphen and all(s not in text for s in action.option_strings if "_" in s), (path, action.option_strings)
        takes_value = action.nargs != 0
        if takes_value and not action.required:
            formatter = parser._get_formatter()
            assert "default" in formatter._get_help_string(action), (path, action.option_strings, action.help)


def test_both_spellings_parse_to_the_same_settings():
    parser = build_parser(["train"])
    a = parser.parse_args(["train", "--prompt-len", "3", "--fixed-w", "1,0", "--weights", "fixed"])
    b = parser.parse_args(["train", "--prompt_len", "3", "--fixed_w", "1,0", "--weights", "fixed"])
    assert vars(a) == vars(b) and a.prompt_len == "3"
    c = parser.parse_args(["reproduce", "--no-claims", "--reuse_fronts"])
    d = parser.parse_args(["reproduce", "--no_claims", "--reuse-fronts"])
    assert vars(c) == vars(d) and c.no_claims and c.reuse_fronts


def test_an_unknown_spelling_is_still_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--prompt__len", "3"])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
