"""Every command line option says what it is, its default and its unit in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

import benchmarks.__main__
import export.__main__
import score.__main__
import server.__main__
import train.__main__

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train": train.__main__.build_parser,
    "export": export.__main__.build_parser,
    "server": server.__main__.build_parser,
    "score": score.__main__.build_parser,
    "benchmarks": benchmarks.__main__.build_parser,
}


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub)


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_is_described_with_its_default(name: str) -> None:
    for parser in _commands(PARSERS[name]()):
        shows_defaults = parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            where = f"{parser.prog} {action.option_strings[0]}"
            assert action.help and len(action.help) > 10, f"{where} has no help"
            assert shows_defaults or "default" in action.help, f"{where} does not state its default"
        parser.format_help()  # renders without error (a stray % in a help text would raise)


def test_the_parsers_that_cover_a_timed_or_sized_option_name_its_unit() -> None:
    help_text = " ".join(p.format_help() for name in PARSERS for p in _commands(PARSERS[name]()))
    for unit in ("seconds", "days", "requests/s"):
        assert unit in help_text
