"""The `hub` parser in-process: help with examples on every registry command, one-line usage errors, global options."""

from __future__ import annotations

import pytest

from hub.cli.main import build_parser, main

REGISTRY_COMMANDS = [
    [],
    ["serve"],
    ["model"],
    *[["model", a] for a in ("register", "list", "show", "download", "delete")],
]


@pytest.mark.parametrize("command", REGISTRY_COMMANDS, ids=lambda c: " ".join(c) or "hub")
def test_help_explains_with_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "usage: hub" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["model", "register", "-p", "x"], "the following arguments are required: -n/--name"),
        (["model", "nope"], "invalid choice: 'nope'"),
        (["model", "list", "--output", "yaml"], "invalid choice: 'yaml'"),
        (["serve", "--port", "http"], "invalid int value: 'http'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: hub") and needle in err


def test_global_options_work_before_and_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--hub", "http://h:1", "--output", "json", "model", "list"])
    after = parser.parse_args(["model", "list", "--hub", "http://h:1", "-o", "json"])
    default = parser.parse_args(["model", "list"])
    assert (before.hub, before.output) == (after.hub, after.output) == ("http://h:1", "json")
    assert default.output == "table" and default.hub is None  # None: $EDGEPORT_HUB or the default URL
