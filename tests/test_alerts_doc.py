"""docs/alerts.md has a section for every alert kind the code raises: the kinds are read
from the source (every ``Alert(kind=...)``), so a new kind without a section fails here."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from capflow.protocol.client import Client

from .test_readme_tour import _command, server  # noqa: F401 -- the server fixture

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "tests", ".git", "build"}


def raised_kinds() -> dict[str, str]:
    """kind -> the file that raises it (every ``Alert(...)`` call outside the tests)."""
    kinds: dict[str, str] = {}
    for path in ROOT.rglob("*.py"):
        if SKIP & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Alert"):
                continue
            [kind] = [k.value for k in node.keywords if k.arg == "kind"]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert isinstance(kind, ast.Constant), f"{where}: an alert's kind is a literal"
            kinds[kind.value] = where
    return kinds


def documented_kinds() -> set[str]:
    text = (ROOT / "docs" / "alerts.md").read_text()
    return set(re.findall(r"^## `([a-z_]+)`$", text, re.MULTILINE))


def test_every_alert_kind_raised_has_a_section():
    kinds = raised_kinds()
    assert {"fill_unbooked", "reconcile_difference", "prices_stale"} <= set(kinds)
    missing = {k: where for k, where in kinds.items() if k not in documented_kinds()}
    assert not missing, f"alert kinds without a section in docs/alerts.md: {missing}"


def test_every_section_is_a_kind_the_code_raises():
    assert documented_kinds() - set(raised_kinds()) == set()


def test_the_docs_list_links_the_page():
    assert "(docs/alerts.md)" in (ROOT / "README.md").read_text()
    assert "(alerts.md)" in (ROOT / "docs" / "adapters.md").read_text()


def page_commands() -> list[str]:
    """Every ``$cf ...`` line of the page's shell blocks, without its comment."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    lines = [line for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
             for line in block.splitlines() if line.startswith("$cf ")]
    return [re.split(r"\s{2,}#", line, maxsplit=1)[0].strip() for line in lines]


def test_the_page_commands_run_against_a_server(server):  # noqa: F811 -- the fixture
    """Each command as written (the account ``live`` is the paper account here, whose
    reconcile is refused as it has no venue), never a usage error."""
    endpoint, env, cwd = server
    with Client(endpoint, timeout_s=2, retries=0) as c:
        c.call("profile.create", profile_id="alpha", allocated="10000")
    commands = [c for c in page_commands() if not c.startswith("$cf events")
                and "<" not in c]
    assert len(commands) >= 20
    for command in commands:
        command = re.sub(r"\blive\b", "paper", command)
        done = subprocess.run(["bash", "-c", f"cf={_command()}\n{command}\n"], cwd=cwd,
                              env=env, timeout=60, capture_output=True, text=True)
        refused = command.startswith("$cf account reconcile") and "CONFLICT" in (
            done.stdout + done.stderr)
        assert done.returncode == 0 or refused, f"{command}\n{done.stdout}\n{done.stderr}"
        assert "usage:" not in done.stderr, command
