"""The `asm` command, called in-process through main() and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

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


# -- asm config check validates what asm run needs --------------------------------------------

NEEDY_PLUGIN = textwrap.dedent("""
    import attrs
    from asm_kernel import hookimpl
    from asm_kernel.builtin.echo import EchoProvider

    @attrs.frozen
    class NeedySettings:
        endpoint: str

    @hookimpl
    def asm_register_providers(register):
        register("needy", lambda settings, ctx: EchoProvider(name=ctx.name), settings=NeedySettings)
""")


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ("[run]\nmax_turns = 0\n", "error[config.invalid]: run.max_turns: max_turns must be an integer of at least 1"),
        ("[run]\nmax_turns = -2\n", "run.max_turns: max_turns must be an integer of at least 1, got -2"),
        ("[run]\nmax_tokens = 0\n", "run.max_tokens: max_tokens must be an integer of at least 1"),
        ("[run]\ntemperature = 7.5\n", "run.temperature: temperature must be a number from 0 to 2, got 7.5"),
        ('[run]\nrequires = ["tool"]\n', 'run.requires[0]: unknown capability \'tool\' (did you mean "tools"?)'),
        ('[run]\nprefers = ["visoin"]\n', 'run.prefers[0]: unknown capability \'visoin\' (did you mean "vision"?)'),
        ('[run]\nprovider = "ghost"\n', "error[config.unknown_component]: run.provider: run.provider names 'ghost'"),
        ('[[providers]]\nuse = "needy"\n', "providers[0].endpoint: missing required key (set it to a string)"),
        ('[[providers]]\nuse = "echoo"\n', "providers[0].use: no provider named 'echoo' is installed (did you mean"),
    ],
)
def test_config_check_validates_what_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, line: str
) -> None:
    (tmp_path / "needy_plugin.py").write_text(NEEDY_PLUGIN)
    (tmp_path / "asm.toml").write_text(MEMORY + '[plugins]\nmodules = ["needy_plugin"]\n' + toml)
    try:
        code, out, err = run_cli(capsys, "config", "check")
        assert code == 1 and out == "" and line in err and err.count("\n") == 1, err
        if "run.requires" in toml or "run.prefers" in toml:  # asm run refuses it the same way
            code, _, run_err = run_cli(capsys, "run", "hi")
            assert code == 1 and line in run_err
    finally:
        sys.modules.pop("needy_plugin", None)


def test_an_unset_provider_key_fails_only_commands_that_build_the_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "asm.toml").write_text(
        MEMORY + '[[providers]]\nname = "e"\nuse = "echo"\nprefix = "${NOT_EXPORTED_KEY}"\n'
    )
    code, out, err = run_cli(capsys, "sessions", "list", "--json")
    assert code == 0 and out == "" and err == ""
    code, _, err = run_cli(capsys, "events", "ses_nope")
    assert code == 1 and "storage.session_not_found" in err
    expected = "asm: error[config.invalid]: providers[0].prefix: environment variable NOT_EXPORTED_KEY is not set"
    for argv in (["run", "hi"], ["run", "hi", "--json"], ["config", "check"], ["providers"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and out == "" and err.startswith(expected) and "export NOT_EXPORTED_KEY=" in err, (argv, err)
    code, out, _ = run_cli(capsys, "config", "show", "--json")
    data = json.loads(out)
    assert code == 0 and data["config"]["providers"][0]["prefix"] == "${NOT_EXPORTED_KEY}"
    assert "NOT_EXPORTED_KEY is not set" in data["components"]["providers[0]"]["problem"]


# -- asm config show: the effective config ----------------------------------------------------

FILE_STORE_PLUGIN = textwrap.dedent("""
    from pathlib import Path
    import attrs
    from asm_kernel import hookimpl
    from asm_kernel.builtin.memory import MemoryStore

    @attrs.frozen
    class FileSettings:
        path: str = "default.db"

    class FileStore(MemoryStore):
        def __init__(self, path):
            super().__init__()
            self.path = path

    @hookimpl
    def asm_register_stores(register):
        register("filestore", lambda s, ctx: FileStore(Path(ctx.config_dir) / s.path), settings=FileSettings)
""")


def _toml_of(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def test_config_show_prints_defaults_plugins_and_the_resolved_store_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "file_store_plugin.py").write_text(FILE_STORE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "conf"))
    (tmp_path / "conf" / "asm.toml").write_text(
        '[store]\nuse = "filestore"\npath = "data/s.db"\n[[providers]]\nuse = "echo"\nchunk_size = 3\n'
        '[plugins]\nmodules = ["file_store_plugin"]\n'
    )
    try:
        code, out, _ = run_cli(capsys, "--config", str(tmp_path / "conf" / "asm.toml"), "config", "show", "--json")
        assert code == 0
        info = json.loads(out)
        config, components = info["config"], info["components"]
        assert config["store"] == {"use": "filestore", "name": "filestore", "path": "data/s.db"}
        assert components["store"]["file"] == str(tmp_path / "conf" / "data" / "s.db")  # against the file's dir
        assert components["store"]["plugin"] == "file_store_plugin"
        assert config["providers"][0] == {"use": "echo", "name": "echo", "model": "echo-1", "prefix": "",
                                          "chunk_size": 3, "delay": 0.0, "context_window": 200000}
        assert components["providers[0]"]["plugin"] == "builtin.echo"
        assert config["router"]["use"] == "capability" and components["router"]["default"] is True
        assert config["run"]["max_turns"] == 8 and config["runtime"]["max_queued_runs"] == 100
        assert config["resilience"]["max_attempts"] == 2 and config["plugins"]["modules"] == ["file_store_plugin"]
        code, out, _ = run_cli(capsys, "--config", str(tmp_path / "conf" / "asm.toml"), "config", "show")
        assert code == 0 and "# from plugin builtin.echo" in out and f"# file: {tmp_path}/conf/data/s.db" in out
        shown = _toml_of(out)  # the text form is a config asm could read back
        assert shown["providers"][0]["chunk_size"] == 3 and shown["run"]["max_turns"] == 8
    finally:
        sys.modules.pop("file_store_plugin", None)


def test_config_show_resolves_the_default_duckdb_file_under_asm_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("asm_duckdb")
    code, out, _ = run_cli(capsys, "config", "show", "--json")
    info = json.loads(out)
    assert code == 0 and info["source"] is None and info["config"]["store"]["use"] == "duckdb"
    assert info["components"]["store"]["file"] == str(tmp_path / "home" / "sessions.duckdb")
    assert info["components"]["store"]["default"] is True and info["components"]["store"]["plugin"] == "duckdb"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "asm.toml").write_text('[store]\nuse = "duckdb"\npath = "rel.duckdb"\n')
    code, out, _ = run_cli(capsys, "-c", str(tmp_path / "sub" / "asm.toml"), "config", "show", "--json")
    assert json.loads(out)["components"]["store"]["file"] == str(tmp_path / "sub" / "rel.duckdb")


def test_config_show_masks_every_kind_of_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SYSTEM_PROMPT", "system-prompt-from-env")
    monkeypatch.setenv("ASM__PROVIDERS__0__API_TOKEN", "override-token-value")
    (tmp_path / "asm.toml").write_text(
        MEMORY + '[[providers]]\nuse = "scripted"\napi_token = "x"\n'
        '[run]\nsystem = "${MY_SYSTEM_PROMPT}"\n'
    )
    for argv in (["config", "show"], ["config", "show", "--json"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and "system-prompt-from-env" not in out + err and "override-token-value" not in out + err


# -- asm run --json: every field, and failures on stderr too ----------------------------------

RUN_FIELDS = {"session_id", "run_id", "status", "output", "usage", "cost", "provider", "model", "stop_reason",
              "pending_tool_calls", "error", "approvals"}


def test_run_json_prints_exactly_the_documented_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, out, err = run_cli(capsys, "run", "hello", "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and set(data) == RUN_FIELDS and data["error"] is None
    doc = (Path(__file__).parent.parent / "docs/reference/cli.md").read_text()
    for field in RUN_FIELDS:
        assert f"| `{field}` |" in doc, field


@pytest.mark.parametrize(
    ("turns", "args", "status", "code"),
    [
        ('[[{error = "provider.invalid_request", message = "bad request"}]]', [], "failed",
         "provider.invalid_request"),
        ('[[{text = "a"}, {delay = 30}]]', ["--timeout", "0.2"], "timed_out", "runtime.timeout"),
    ],
)
def test_a_failed_or_timed_out_run_prints_the_error_line_in_json_mode_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], turns: str, args: list[str], status: str, code: str
) -> None:
    (tmp_path / "asm.toml").write_text(MEMORY + f'[[providers]]\nname = "s"\nuse = "scripted"\nturns = {turns}\n')
    for json_mode in (True, False):
        exit_code, out, err = run_cli(capsys, "run", "x", *args, *(["--json"] if json_mode else []))
        assert exit_code == 1 and err.count("\n") == 1, err
        assert err.startswith(f"asm: error[{code}]: run run_") and f" {status}: " in err
        assert "(session ses_" in err and "continue with: asm run --session ses_" in err
        if json_mode:
            data = json.loads(out)
            assert data["status"] == status and data["error"]["code"] == code and data["run_id"] in err
            assert data["session_id"] in err


# -- hints name installable things ------------------------------------------------------------


def test_an_unknown_store_hint_names_what_can_be_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asm_kernel.registry as registry

    monkeypatch.setenv("ASM_DISABLED_PLUGINS", "duckdb")  # as if asm-duckdb were not installed
    (tmp_path / "asm.toml").write_text('[store]\nuse = "duckdb"\n')
    checkout = Path(registry.__file__).resolve().parent.parent
    code, _, err = run_cli(capsys, "config", "check")
    assert code == 1 and f"pip install {checkout / 'plugins' / 'asm-duckdb'} to add it" in err
    monkeypatch.chdir(checkout)  # from the checkout's root the path is relative
    code, _, err = run_cli(capsys, "--config", str(tmp_path / "asm.toml"), "config", "check")
    assert "pip install ./plugins/asm-duckdb to add it" in err
    monkeypatch.setattr(registry, "__file__", str(tmp_path / "site-packages" / "asm_kernel" / "registry.py"))
    code, _, err = run_cli(capsys, "--config", str(tmp_path / "asm.toml"), "config", "check")
    assert "pip install asm-duckdb to add it" in err
    (tmp_path / "asm.toml").write_text('[store]\nuse = "memroy"\n')
    code, _, err = run_cli(capsys, "--config", str(tmp_path / "asm.toml"), "sessions", "list")
    assert 'no store named \'memroy\' is installed (did you mean "memory"?; installed stores: memory' in err


def test_the_starter_config_names_installable_plugins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "init")[0] == 0
    text = (tmp_path / "asm.toml").read_text()
    assert "pip install " in text and "plugins/asm-duckdb" in text  # run from a checkout


# -- output that cannot break -----------------------------------------------------------------


def test_values_the_terminal_cannot_encode_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASM__RUN__SYSTEM", "caf\udce9")  # a non-UTF-8 byte from the environment
    monkeypatch.setenv("ASM__RUN__\udcff", "1")
    (tmp_path / "asm.toml").write_text(MEMORY)
    code, _, err = run_cli(capsys, "config", "check")
    assert code == 1 and err.startswith("asm: error[config.invalid]: run.") and "\\udcff" in err
    monkeypatch.delenv("ASM__RUN__\udcff")
    code, out, _ = run_cli(capsys, "config", "show")
    assert code == 0 and 'system = "caf\\udce9"' in out


# -- stderr logging ---------------------------------------------------------------------------

LOGGING_PLUGIN = textwrap.dedent("""
    import logging
    from asm_kernel import hookimpl
    from asm_kernel.secrets import register_secret

    @hookimpl
    def asm_kernel_started(kernel):
        register_secret("very-secret-logged-value")
        log = logging.getLogger("asm.testplugin")
        log.info("waiting for something held by %s", "very-secret-logged-value")
        log.debug("a debug detail")
        logging.getLogger("otherlib").info("noise from another library")
""")


@pytest.mark.parametrize(
    ("flags", "expected", "absent"),
    [
        ([], ["asm: waiting for something held by [redacted]"], ["debug detail", "noise"]),
        (["--quiet"], [], ["waiting", "debug detail"]),
        (["-v"], ["asm: waiting for something", "asm: a debug detail"], ["noise"]),
    ],
)
def test_asm_log_records_are_one_redacted_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: list[str], absent: list[str]
) -> None:
    (tmp_path / "logging_plugin.py").write_text(LOGGING_PLUGIN)
    (tmp_path / "asm.toml").write_text(MEMORY + '[plugins]\nmodules = ["logging_plugin"]\n')
    try:
        code, _, err = run_cli(capsys, "sessions", "list", *flags)
    finally:
        sys.modules.pop("logging_plugin", None)
    assert code == 0 and "very-secret-logged-value" not in err
    for text in expected:
        assert text in err, err
    for text in absent:
        assert text not in err, err


@pytest.mark.filterwarnings("default::UserWarning")  # the CLI's own handling, not the test suite's "error"
def test_python_warnings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASM_DISABLED_PLUGINS", "duckdb")
    code, _, err = run_cli(capsys, "sessions", "list")
    assert code == 0
    assert err.startswith("asm: warning: no durable store is installed, so sessions are kept in memory") and err.count(
        "\n"
    ) == 1, err


# -- module size ------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["config", "cli"])
def test_no_module_of_config_or_cli_is_over_400_lines(package: str) -> None:
    root = Path(__file__).parent.parent / "asm_kernel" / package
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.glob("*.py")}
    assert sizes and max(sizes.values()) <= 400, sizes


def test_interpolated_names_and_paths_are_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORT_NAME", "Qz9xK")  # too short for the redactor: the output itself must hide it
    (tmp_path / "asm.toml").write_text(
        'home = "h-${SHORT_NAME}"\n[store]\nuse = "memory"\n[[providers]]\nname = "${SHORT_NAME}"\nuse = "echo"\n'
    )
    for argv in (["config", "check"], ["config", "show"], ["config", "show", "--json"], ["providers", "--json"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 0 and "Qz9xK" not in out + err, (argv, out, err)
    (tmp_path / "asm.toml").write_text('[store]\nuse = "${SHORT_NAME}"\n')
    for argv in (["config", "check"], ["config", "show", "--json"], ["sessions", "list"]):
        code, out, err = run_cli(capsys, *argv)
        assert "Qz9xK" not in out + err and "no store named '********'" in out + err, (argv, out, err)
