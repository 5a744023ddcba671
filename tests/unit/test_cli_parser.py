"""The `syncd` argument parser: every command and option says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from controllers.cli import build_parser


def commands(
    parser: argparse.ArgumentParser, path: str = "syncd"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under `parser`, with its command line (`syncd tasks list`)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    found = list(commands(build_parser()))
    assert {"syncd tasks list", "syncd snapshot create", "syncd import stock"} <= {
        name for name, _ in found
    }
    missing = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, parser in found
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


def test_every_subcommand_has_help() -> None:
    missing = [
        f"{name} {choice.dest}"
        for name, parser in commands(build_parser())
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert missing == []


def test_priority_is_offered_where_a_task_is_started() -> None:
    for line in ("tasks create noop", "snapshot create", "import stock f.xlsx"):
        args = build_parser().parse_args([*line.split(), "--priority", "5"])
        assert args.priority == 5, line
