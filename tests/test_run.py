"""The command line: profile commands on real storage, clear errors, call / keys."""

from __future__ import annotations

import pytest

import run


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("CAPFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CAPFLOW_STORAGE__URL", f"sqlite:///{tmp_path}/cli.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(argv, capsys):
    code = run.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_profile_create_list_show(env, capsys):
    code, out, _ = _run(["profile", "create", "alpha", "1500.5"], capsys)
    assert code == 0 and "available" in out and "1500.50" in out
    code, out, _ = _run(["profile", "list"], capsys)
    assert code == 0 and "alpha" in out and "1 profile(s)" in out
    code, out, _ = _run(["profile", "show", "alpha"], capsys)
    assert code == 0 and "ACTIVE" in out and "1500.50" in out


@pytest.mark.parametrize("argv, needle", [
    (["profile", "create", "alpha", "1.001"], "INVALID_ARGUMENT (allocated)"),
    (["profile", "create", "bad id", "5"], "INVALID_ARGUMENT (profile_id)"),
    (["profile", "show", "ghost"], "NOT_FOUND"),
])
def test_bad_input_is_a_clear_message_and_exit_code_2(env, capsys, argv, needle):
    code, _, err = _run(argv, capsys)
    assert code == 2 and needle in err


def test_a_bad_config_names_the_setting(env, capsys, monkeypatch):
    monkeypatch.setenv("CAPFLOW_LEDGER__MAX_LIVE", "many")
    code, _, err = _run(["profile", "list"], capsys)
    assert code == 2 and "$.ledger.max_live" in err


def test_keys_generate_writes_key_pairs_and_the_client_table(env, capsys):
    code, out, _ = _run(["keys", "generate", "bot-1", "--dir", str(env / "keys")], capsys)
    assert code == 0 and out.count("wrote ") == 4
    names = sorted(p.name for p in (env / "keys").iterdir())
    assert names == ["bot-1.key", "bot-1.key_secret", "clients.toml", "server.key",
                     "server.key_secret"]
    assert oct((env / "keys" / "server.key_secret").stat().st_mode & 0o777) == "0o600"
    assert '[clients."bot-1"]' in (env / "keys" / "clients.toml").read_text()
    code, _, err = _run(["keys", "generate", "bot-1", "--dir", str(env / "keys")], capsys)
    assert code == 2 and "already exists" in err
