"""The `asm` command, called in-process through main() and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asm_kernel.cli import main

MEMORY = '[store]\nuse = "memory"\n'


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_imports_no_vendor_sdk() -> None:
    code = textwrap.dedent("""
        import sys
        from asm_kernel.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("anthropic", "openai", "duckdb", "psycopg", "httpx") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in proc.stdout, proc.stdout
    assert "demo" in proc.stdout and "events" in proc.stdout


def test_run_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, out, _ = run_cli(capsys, "run", "hello cli", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "completed" and data["output"] == "hello cli" and data["provider"] == "echo"
    assert data["session_id"].startswith("ses_") and data["run_id"].startswith("run_")
    assert data["usage"]["output_tokens"] > 0


def test_run_streams_text_and_prints_the_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, out, err = run_cli(capsys, "run", "streamed words")
    assert code == 0 and out == "streamed words\n"
    assert "asm run --session ses_" in err


def test_errors_are_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY + '[[providers]]\nuse = "echo"\nmodle = "x"\n')
    code, out, err = run_cli(capsys, "run", "x")
    assert code == 1 and out == ""
    assert err.strip() == 'asm: error[config.invalid]: providers[0].modle: unknown key; did you mean "model"?'
    assert "Traceback" not in err


def test_unknown_provider_and_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, _, err = run_cli(capsys, "run", "x", "--provider", "ghost")
    assert code == 1 and "error[config.unknown_component]" in err and "echo" in err
    code, _, err = run_cli(capsys, "run", "x", "--session", "ses_nope")
    assert code == 1 and "storage.session_not_found" in err
    code, _, err = run_cli(capsys, "events", "ses_nope")
    assert code == 1 and "ses_nope" in err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    proc = subprocess.run(
        [sys.executable, "-m", "asm_kernel.cli", "--debug", "run", "x", "--provider", "ghost"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_init_writes_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, _ = run_cli(capsys, "init")
    assert code == 0 and (tmp_path / "asm.toml").is_file()
    code, _, err = run_cli(capsys, "init")
    assert code == 1 and "--force" in err
    assert run_cli(capsys, "init", "--force")[0] == 0


def test_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("MY_SECRET_KEY", "sk-live-abcdefghijklmnop")
    (tmp_path / "asm.toml").write_text(MEMORY + '[[providers]]\nuse = "echo"\nprefix = "${MY_SECRET_KEY}"\n')
    code, out, _ = run_cli(capsys, "config", "show", "--json")
    assert code == 0 and "sk-live" not in out
    data = json.loads(out)
    assert data["config"]["providers"][0]["prefix"] == "********"
    code, out, _ = run_cli(capsys, "config", "show")
    assert "sk-live" not in out


def test_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, out, _ = run_cli(capsys, "config", "check")
    assert code == 0 and "config OK" in out
    (tmp_path / "asm.toml").write_text(MEMORY + '[[providers]]\nuse = "echo"\nchunk_size = -1\n')
    code, _, err = run_cli(capsys, "config", "check")
    assert code == 1 and "providers[0].chunk_size" in err


def test_plugins_json_lists_builtins_with_components(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plugins", "--json")
    assert code == 0
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows["builtin.echo"]["components"] == ["provider:echo"]
    assert rows["builtin.memory"]["status"] == "loaded"
    code, out, _ = run_cli(capsys, "plugins")
    assert "builtin.scripted" in out and "providers:" in out


def test_demo_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, out, _ = run_cli(capsys, "demo", "--fast")
    assert code == 0
    assert out.count("== session ") == 3 and "== the stored event log of session" in out
    assert "asm> (echo) Hi! My order #1234 has not arrived yet." in out
    assert "run_completed" in out and "message_streamed" in out


def test_plugin_commands_are_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY + '[plugins]\nmodules = ["cmd_plugin"]\n')
    (tmp_path / "cmd_plugin.py").write_text(
        textwrap.dedent("""
        from asm_kernel import hookimpl

        def hello(args, ctx):
            ctx.line(f"hello {args.who}")
            return 0

        @hookimpl
        def asm_register_commands(cli):
            cli.add("hello", hello, help="say hello",
                    configure=lambda p: p.add_argument("who"))
    """)
    )
    try:
        code, out, _ = run_cli(capsys, "hello", "world")
    finally:
        sys.modules.pop("cmd_plugin", None)
    assert code == 0 and out == "hello world\n"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: asm" in out


def test_providers_lists_capabilities_models_and_health(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(
        MEMORY + '[[providers]]\nname = "e"\nuse = "echo"\n[[providers]]\nname = "s"\nuse = "scripted"\n'
        'capabilities = ["streaming", "tools"]\n'
    )
    code, out, _ = run_cli(capsys, "providers", "--json")
    assert code == 0
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rows["s"]["capabilities"] == ["streaming", "tools"]
    assert rows["e"]["models"][0]["name"] == "echo-1" and rows["e"]["models"][0]["breaker"] == "closed"
    assert rows["e"]["models"][0]["price"]["as_of"] == "2026-11-27"
    code, out, _ = run_cli(capsys, "providers", "--models")
    assert code == 0 and "echo-1" in out and "price as of" in out


def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, _, err = run_cli(capsys, "sessions", "list", "--status", "bogus")
    assert code == 1 and "unknown session status 'bogus'" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "init", str(tmp_path / "missing" / "dir" / "x.toml"))
    assert code == 1 and "cannot write" in err
    assert run_cli(capsys, "sessions")[0] == 2


def test_run_json_reports_a_failed_run_with_its_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(
        MEMORY + '[[providers]]\nname = "bad"\nuse = "scripted"\nturns = [[{error = "provider.invalid_request"}]]\n'
    )
    code, out, _ = run_cli(capsys, "run", "x", "--json")
    data = json.loads(out)
    assert code == 1 and data["status"] == "failed" and data["error"]["code"] == "provider.invalid_request"
    assert data["session_id"].startswith("ses_") and data["run_id"].startswith("run_")
    code, _, err = run_cli(capsys, "run", "x")
    assert code == 1 and "error[provider.invalid_request]" in err and "(session ses_" in err


def test_plugin_commands_come_from_the_config_named_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.toml").write_text(MEMORY + '[plugins]\nmodules = ["cmd_plugin2"]\n')
    (tmp_path / "cmd_plugin2.py").write_text(textwrap.dedent('''
        from asm_kernel import hookimpl

        @hookimpl
        def asm_register_commands(cli):
            cli.add("ping", lambda args, ctx: ctx.line("pong"), help="pong")
    '''))
    try:
        code, out, _ = run_cli(capsys, "--config", str(tmp_path / "sub" / "other.toml"), "ping")
    finally:
        sys.modules.pop("cmd_plugin2", None)
    assert code == 0 and out == "pong\n"
