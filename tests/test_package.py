"""capflow installs as one package, `capflow`, from a wheel, beside a package that has its
own top-level `run` and `actors` modules: the command, the stress harness, the README's
embedding example and a bare `import capflow` (which pulls in no framework) all work
there, and neither package overwrites the other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(argv, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _other_package(where: Path) -> Path:
    """A package of someone else's with top-level `run` and `actors` of its own."""
    src = where / "othertool"
    (src / "actors").mkdir(parents=True)
    (src / "run.py").write_text("WHO = 'othertool'\n")
    (src / "actors" / "__init__.py").write_text("WHO = 'othertool'\n")
    (src / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "othertool"
        version = "1.0"

        [tool.setuptools]
        py-modules = ["run"]
        packages = ["actors"]
        """))
    return src


def _embedding_example() -> str:
    """The first Python block of the README's "Embedding capflow" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Embedding capflow"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_wheel_installs_as_one_package_beside_another_with_run_and_actors(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
          str(ROOT), str(_other_package(tmp_path))])
    [capflow_wheel] = wheels.glob("capflow-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    _run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          str(capflow_wheel), *map(str, wheels.glob("othertool-*.whl"))])
    work = tmp_path / "work"  # not the repository: only the installed files count
    work.mkdir()
    # the wheel holds one top-level package (and its metadata; its script goes to bin/)
    listed = _run([py, "-c", "import importlib.metadata as m; print('\\n'.join("
                             "sorted({f.parts[0] for f in m.files('capflow')})))"],
                  cwd=work).stdout
    assert {x for x in listed.split()
            if not x.endswith(".dist-info") and x != ".."} == {"capflow"}
    # neither overwrote the other
    out = _run([py, "-c", "import run, actors, capflow.run, capflow.actors.system; "
                          "print(run.WHO, actors.WHO)"], cwd=work).stdout
    assert out.split() == ["othertool", "othertool"]
    # importing capflow pulls in no actor framework, socket library or database driver
    out = _run([py, "-c", "import sys, capflow; import capflow.actors.model.money; "
                          "print(sorted(m for m in ('pykka', 'zmq', 'sqlalchemy') "
                          "if m in sys.modules))"], cwd=work).stdout
    assert out.strip() == "[]"
    capflow = str(env_dir / "bin" / "capflow")
    assert "stress" in _run([capflow, "--help"], cwd=work).stdout
    # the stress harness runs its own server and bots from the installed package
    run_dir = work / "stress"
    _run([capflow, "stress", "--clients", "1", "--profiles", "1", "--duration", "3",
          "--out", str(run_dir), "--no-progress"], cwd=work)
    assert "PASS" in (run_dir / "summary.md").read_text()
    # the README's embedding example, as written
    (work / "example.py").write_text(_embedding_example())
    _run([py, "example.py"], cwd=work)


@pytest.mark.parametrize("line", ["import actors.ledger", "from protocol import client",
                                  "from storage.schema import metadata", "import run",
                                  "from brokers.paper import PaperBroker",
                                  "from bench import suite"])
def test_the_lint_refuses_a_bare_top_level_import(tmp_path, line):
    """One name per module: the repository's folders are imported through `capflow`, so
    `actors.ledger` and `capflow.actors.ledger_actor` never load as two copies."""
    source = tmp_path / "example.py"
    source.write_text(f"{line}\n")
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--config", str(ROOT / "pyproject.toml"),
                           "--select", "TID251", str(source)], capture_output=True, text=True)
    assert proc.returncode == 1 and "TID251" in proc.stdout, proc.stdout + proc.stderr
    source.write_text(f"{line.replace(line.split()[1], 'capflow.' + line.split()[1], 1)}\n")
    proc = subprocess.run([str(ruff), "check", "--config", str(ROOT / "pyproject.toml"),
                           "--select", "TID251", str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_embedding_example_runs_in_a_temporary_folder_whose_name_a_url_would_bend(
        tmp_path):
    """Before: an f-string SQLite URL; a TMPDIR with `?` cut the file name off there, one
    with `%20` named another folder."""
    tmp = tmp_path / "odd?name %20here"
    tmp.mkdir()
    example = tmp_path / "example.py"
    example.write_text(_embedding_example() + textwrap.dedent("""\
        import sqlalchemy
        db = sqlalchemy.engine.make_url(cfg.storage.url).database
        assert db.startswith(tempfile.gettempdir()) and db.endswith("/capflow.db"), db
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFLOW_")}
    done = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**env, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10000.00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.py", "odd?name %20here"]
