"""CI runs the test command the README gives, so what a newcomer types is what CI checks."""

from __future__ import annotations

import re

from tests.support import REPO


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    tests_section = readme.split("## Tests", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", tests_section, re.S)
    assert len(commands) == 1, "the README's Tests section should give exactly one test command"
    command = commands[0].strip()
    assert command.startswith("python3 -m pytest"), command
    assert "-q" not in command.split(), "quiet mode hides which test file is running"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in ci, f".ci/run does not run the README's test command {command!r}"
