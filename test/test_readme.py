"""The README stays true: every `taseg` command it shows exists and parses, every file it
links exists, and the set-up / test commands are the ones CI runs."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from taseg_ros.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def taseg_commands() -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#", line)[0].strip()
            if line.startswith("$ "):
                line = line[2:]
            for prefix in ("taseg ", ".venv/bin/taseg "):
                if line.startswith(prefix):
                    commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("argv", taseg_commands(), ids=lambda a: " ".join(a[:2]))
def test_every_taseg_command_in_the_readme_parses(argv):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    assert all("=" in item for item in extra), extra  # only key=value overrides may be left over
    assert callable(args.func)


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


def test_ci_runs_the_readme_set_up_and_test_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/setup.sh" in README and "scripts/setup.sh" in ci
    assert ".venv/bin/python -m pytest" in README and ".venv/bin/python -m pytest" in ci
