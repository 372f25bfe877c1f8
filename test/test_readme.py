"""The README stays true: every `taseg` command it shows exists and parses, every file it
links exists, and the set-up / test commands are the ones CI runs."""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
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


def front_door() -> list[str]:
    """The commands of the README's first code block (the front door)."""
    block = re.findall(r"```bash\n(.*?)```", README, re.S)[0]
    return [re.split(r"\s#", line)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_front_door_is_two_commands_and_ci_runs_the_test_one():
    assert front_door() == ["scripts/demo.sh", "scripts/test.sh"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert ci[-1] == "scripts/test.sh"  # exactly the README's test command, last
    for script, runs in (("demo.sh", '/bin/taseg" demo "$@"'), ("test.sh", '/bin/python" -m pytest "$@"')):
        lines = (REPO / "scripts" / script).read_text().splitlines()
        setup = lines.index("scripts/setup.sh --if-needed")
        assert any(runs in line for line in lines[setup + 1:]), script  # set up first, then run


def fake_venv(folder: Path, stamp: str | None) -> Path:
    """A virtual environment whose python only says it was called (set-up would need PyPI)."""
    (folder / "bin").mkdir(parents=True)
    python = folder / "bin" / "python"
    python.write_text("#!/bin/sh\necho SET-UP-RAN\nexit 3\n")
    python.chmod(0o755)
    if stamp is not None:
        (folder / ".taseg-setup").write_text(stamp)
    return folder


def setup_inputs() -> str:
    return hashlib.sha256(b"".join((REPO / f).read_bytes() for f in ("setup.py", "setup.cfg", "scripts/setup.sh"))).hexdigest()


@pytest.mark.parametrize("stamp, sets_up", [
    (lambda: f"inputs {setup_inputs()}\nros 1\n", False),  # set up from these files: nothing to do
    (lambda: "inputs 0123\nros 1\n", True),  # setup.py or the script changed since
    (lambda: None, True),  # never set up by this script
])
def test_the_set_up_runs_only_when_the_environment_is_missing_or_stale(tmp_path, stamp, sets_up):
    venv = fake_venv(tmp_path / "venv", stamp())
    done = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--if-needed"], capture_output=True, text=True,
                          env={**os.environ, "VIRTUAL_ENV": str(venv)}, timeout=120)
    assert ("SET-UP-RAN" in done.stdout) == sets_up, done.stdout + done.stderr
    assert (done.returncode == 0) != sets_up


def test_the_test_map_lists_every_module_with_tests_that_exist():
    """test/README.md: a row for every module of the package, naming test files that exist."""
    rows = re.findall(r"^\| `taseg_ros/([^`]+)` \| (.+?) \|$", (REPO / "test" / "README.md").read_text(), re.M)
    listed = [module for module, _ in rows]
    modules = sorted(p.relative_to(REPO / "taseg_ros").as_posix() for p in (REPO / "taseg_ros").rglob("*.py"))
    assert sorted(listed) == modules, f"missing: {sorted(set(modules) - set(listed))}, gone: {sorted(set(listed) - set(modules))}"
    assert len(listed) == len(set(listed))
    for module, tests in rows:
        files = [re.sub(r"\s*\(.*\)$", "", t.strip()) for t in tests.split(",")]
        assert files and all((REPO / "test" / f).is_file() for f in files), (module, files)
