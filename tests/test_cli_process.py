"""The `asm` command as a real process: signals, exit codes, stderr, which plugins get imported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asm_kernel.testing.processes import default_signals

SLOW = """
[store]
use = "memory"

[plugins]
modules = ["streaming_hook"]

[[providers]]
name = "slow"
use = "scripted"
turns = [[{text = "first words "}, {delay = 60}, {text = "never"}]]
"""


STREAMING_HOOK = """
import sys
from asm_kernel import hookimpl

@hookimpl
def asm_event_appended(event):
    if event.type == "message_streamed":
        sys.stderr.write("test: streaming\\n")
        sys.stderr.flush()
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM")}
    env["ASM_HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def _asm(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asm_kernel.cli", *args], cwd=tmp_path, env=env or _env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(("sig", "word", "code"), [(signal.SIGINT, "interrupted", 130),
                                                   (signal.SIGTERM, "terminated", 143)])
@pytest.mark.parametrize("json_mode", [False, True])
def test_a_signal_during_run_prints_the_session_to_continue(
    tmp_path: Path, sig: signal.Signals, word: str, code: int, json_mode: bool
) -> None:
    (tmp_path / "asm.toml").write_text(SLOW)
    (tmp_path / "streaming_hook.py").write_text(STREAMING_HOOK)
    args = ["run", "hello", *(["--json"] if json_mode else [])]
    proc = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stderr.readline() == "test: streaming\n"  # the run is streaming (with --json, only stored)
    if not json_mode:
        assert proc.stdout.read(len("first words ")) == "first words "  # and asm has seen its events
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    # With --json the signal may come before asm saw an event of the run: then it has no run id.
    pattern = rf'asm: {word}: run (run_\w+ )?cancelled \(session (ses_\w+); continue with: asm run --session \2 "..."\)'
    assert re.fullmatch(pattern, last), err
    if not json_mode:
        assert last.startswith(f"asm: {word}: run run_")
    assert "Traceback" not in err


# -- a blocked plugin is never imported -------------------------------------------------------

RECORDER = textwrap.dedent("""
    import os, pathlib
    pathlib.Path(os.environ["RECORDER_MARK"]).write_text("imported")
    from asm_kernel import hookimpl

    @hookimpl
    def asm_register_commands(cli):
        cli.add("recorded", lambda args, ctx: ctx.line("recorded"), help="from the recorder plugin")
""")


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An installed plugin (entry point `recorder`) that leaves a mark when it is imported."""
    site = tmp_path / "site"
    dist = site / "asm_recorder-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "asm_recorder.py").write_text(RECORDER)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: asm-recorder\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[asm]\nrecorder = asm_recorder\n")
    mark = tmp_path / "imported.mark"
    env = _env(tmp_path, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               RECORDER_MARK=str(mark))
    return env, mark


def test_the_recorder_plugin_is_imported_when_allowed(tmp_path: Path, recorder: tuple[dict[str, str], Path]) -> None:
    env, mark = recorder
    (tmp_path / "asm.toml").write_text('[store]\nuse = "memory"\n')
    proc = _asm(tmp_path, "recorded", env=env)
    assert proc.returncode == 0 and proc.stdout == "recorded\n" and mark.is_file(), proc.stderr


BROKEN = [
    ('[store]\nuse = "memory"\n[plugins]\ndisabled = ["recorder"]\n[run]\nmax_turns = "many"\n', {}),
    ('[store]\nuse = "memory"\n[plugins]\ndisabled = ["recorder"]\nmodle = 1\n', {}),
    ('[store]\nuse = "memory"\n[run]\nmax_turns = "many"\n', {"ASM_DISABLED_PLUGINS": "recorder"}),
    ('[store]\nuse = "memory"\n[run]\nmax_turns = "many"\n', {"ASM__PLUGINS__DISABLED": '["recorder"]'}),
    ('[plugins]\ndisabled = ["recorder"\n', {}),  # not TOML: nothing tells what is disabled
    ('[plugins]\ndisabled = "recorder"\n', {}),  # malformed switch: likewise
]


@pytest.mark.parametrize(("toml", "extra"), BROKEN)
def test_a_disabled_plugin_is_never_imported_whatever_is_wrong(
    tmp_path: Path, recorder: tuple[dict[str, str], Path], toml: str, extra: dict[str, str]
) -> None:
    env, mark = recorder
    env = {**env, **extra}
    (tmp_path / "asm.toml").write_text(toml)
    for args in (["--help"], ["sessions", "list"], ["config", "check"], ["plugins"], ["recorded"], ["config", "show"]):
        proc = _asm(tmp_path, *args, env=env)
        assert not mark.exists(), (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if args != ["--help"] and args != ["plugins"]:
            assert proc.returncode != 0 and "error[config.invalid]" in proc.stderr, (args, proc.stderr)


# -- unreadable files: one typed line from every command --------------------------------------

UNREADABLE = [
    ("asm.toml", b'[store]\nuse = "memory"\n# caf\xe9\n', "asm.toml is not valid UTF-8 (byte 0xe9 at line 3)"),
    ("asm.toml", b"x = " + b"[" * 500 + b"]" * 500 + b"\n", "asm.toml nests arrays or tables too deeply"),
    ("pyproject.toml", b"[project\n", "pyproject.toml is not valid TOML"),
]


@pytest.mark.parametrize(("name", "content", "message"), UNREADABLE)
def test_an_unreadable_config_file_is_one_error_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    for args in (["sessions", "list"], ["config", "show", "--json"], ["run", "hi"]):
        proc = _asm(tmp_path, *args)
        assert proc.returncode == 1 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("asm: error[config.invalid]: ") and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize(("name", "content", "message"), UNREADABLE)
def test_an_unreadable_config_file_fails_every_command_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    from asm_kernel.cli import main

    (tmp_path / name).write_bytes(content)
    commands = [["sessions", "list"], ["sessions", "show", "ses_x"], ["events", "ses_x"], ["providers"],
                ["config", "show"], ["config", "check"], ["run", "hi"], ["demo", "--fast"]]
    for args in commands:
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err.startswith("asm: error[config.invalid]: "), (args, err)
        assert message in err and err.count("\n") == 1, (args, err)
    code = main(["plugins"])  # lists what it can, and says why the config is not used
    out, err = capsys.readouterr()
    assert code == 0 and "builtin.echo" in out and message in err
