"""The linter and the homes it cannot see: ruff with the repository's ruff.toml (rule families the code
follows, and banned APIs that keep reading and writing in their homes), and, from the syntax tree, the
method calls ruff cannot resolve (``path.write_text``, ``fig.savefig``, ...)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from taseg_ros.frames.render import OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taseg_ros"
LINTED = ["taseg_ros", "test", "scripts", "setup.py", "launch"]

# Method calls that read or write a file, and the one module (the home) that may make them. ruff's
# banned-api sees module functions (yaml.safe_load, os.replace, cv2.imwrite); a method on a path or
# a figure it cannot resolve, so these are checked here.
METHOD_HOMES = {
    "write_text": "outputs.py",  # outputs: write_text_atomic / write_bytes_atomic / replacing
    "write_bytes": "outputs.py",
    "savefig": "outputs.py",  # outputs.save_figure
    "read_text": "config_io.py",  # config_io.read_text / read_yaml / read_json: regular files, bounded
    "read_bytes": "config_io.py",
}


def test_ruff_is_clean():
    try:
        import ruff  # noqa: F401  (the test extra installs it: pip install -e .[test])
    except ImportError:
        pytest.fail("ruff is not installed: scripts/setup.sh (or pip install -e '.[test]') installs it")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *LINTED],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check (ruff.toml) found:\n{done.stdout}{done.stderr}"


def method_calls(path: Path, names) -> list[tuple[int, str]]:
    return [(node.lineno, node.func.attr) for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names]


def test_files_are_read_and_written_only_in_their_homes():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, name in method_calls(path, METHOD_HOMES):
            if path.name != METHOD_HOMES[name] or path.parent != PACKAGE:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: .{name}() outside taseg_ros/{METHOD_HOMES[name]}")
    assert not offenders, "reads/writes outside their homes:\n  " + "\n  ".join(offenders)


def test_output_names_are_spelled_only_in_their_table():
    """A tuple or list of two or more output names ("labels", "colorized", ...) spelled by hand outside
    frames/render.py re-spells OUTPUTS / IMAGE_OUTPUTS."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.as_posix() == "frames/render.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(names) >= 2 and len(names) == len(node.elts) and set(names) <= set(OUTPUTS):
                    offenders.append(f"taseg_ros/{rel}:{node.lineno}: {names}")
    assert not offenders, "output names spelled by hand (use frames.render.OUTPUTS / IMAGE_OUTPUTS):\n  " + \
        "\n  ".join(offenders)


def chosen_domains(path: Path) -> list[int]:
    """Lines that pick a DDS domain id by hand (a literal, or a call other than claim_domain) for a
    ``domain_id=`` argument or a name with "domain" in it."""
    def by_hand(value) -> bool:
        if isinstance(value, ast.Constant):
            return value.value is not None
        return isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", "")) != "claim_domain"

    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            lines += [node.lineno for k in node.keywords if k.arg == "domain_id" and by_hand(k.value)]
        elif isinstance(node, ast.Assign) and by_hand(node.value):
            lines += [node.lineno for t in node.targets if isinstance(t, ast.Name) and "domain" in t.id.lower()]
    return lines


def test_dds_domains_are_claimed_not_picked():
    """Two runs on one machine (CI beside a developer's run) meet on a domain picked at random now and
    then; ros.domains.claim_domain hands each process one nobody else holds."""
    offenders = [f"{path.relative_to(ROOT)}:{line}" for top in LINTED for path in sorted((ROOT / top).rglob("*.py"))
                 for line in chosen_domains(path)]
    assert not offenders, "DDS domain ids picked by hand (use taseg_ros.ros.domains.claim_domain()):\n  " + \
        "\n  ".join(offenders)


def test_the_lint_checks_find_what_they_look_for(tmp_path):
    """The checks above are not vacuous: a write_text call and a literal output tuple are found."""
    sample = tmp_path / "sample.py"
    sample.write_text('from pathlib import Path\nPath("x").write_text("y")\nfig.savefig("a.png")\n')
    assert method_calls(sample, METHOD_HOMES) == [(2, "write_text"), (3, "savefig")]
    domains = tmp_path / "domains.py"
    domains.write_text("domain = random.randint(100, 200)\nrclpy.init(domain_id=201)\nok = claim_domain()\n"
                       "ToolNode('x', domain_id=ok)\nDOMAIN_ID = claim_domain()\n")
    assert chosen_domains(domains) == [1, 2]
    banned = tmp_path / "banned.py"
    banned.write_text("import yaml\nimport os\nyaml.safe_load('a')\nos.replace('a', 'b')\n")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "ruff.toml"),
                           "--output-format", "concise", str(banned)], capture_output=True, text=True, timeout=120)
    assert done.stdout.count("TID251") == 2, done.stdout
