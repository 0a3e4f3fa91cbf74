"""The `asm` command as a client of `asm serve`: the same output, --json included, as against the store.

In-process: the CLI reaches a server through ASM_URL, then reads the *same* memory store directly
(its kernel factory patched to use the server's store), and both outputs are compared. As real
processes: `asm events --follow --json` over SSE, and — on a DuckDB file, once the v2 store is
installed — `asm serve` owning the file while the CLI finds it through the server file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from asm_kernel import Kernel
from asm_kernel.cli import CliContext, main
from asm_kernel.cli.serverfile import ServerFile, server_file_for, write_server_file
from asm_kernel.testing.processes import default_signals
from serve_helpers import SLOW_ECHO, TOKEN_OPS, ServerThread


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def both(server: ServerThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``both(*argv)``: (output through the server, output reading its store directly)."""
    store = server.kernel.store

    def direct_kernel(self: CliContext, config: Any = None, *, store_only: bool = False) -> Kernel:
        return Kernel({"store": {"use": "memory"}, "providers": [SLOW_ECHO]}, store=store, short_lived=True)

    def run(*argv: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        monkeypatch.setenv("ASM_URL", server.url)
        remote = cli(capsys, *argv)
        monkeypatch.delenv("ASM_URL")
        with monkeypatch.context() as patch:
            patch.setattr(CliContext, "kernel", direct_kernel)
            direct = cli(capsys, *argv)
        return remote, direct

    return run


def _seed(server: ServerThread) -> tuple[str, str]:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        body = {"agent_id": "support", "tags": ["vip"], "metadata": {"n": 1}}
        sid = client.post("/v1/sessions", json=body).json()["id"]
        for text in ("first question", "second question"):
            run = client.post(f"/v1/sessions/{sid}/runs", json={"input": text}).json()
            client.get(f"/v1/runs/{run['id']}/await", params={"timeout": 10})
        client.post("/v1/sessions", json={"agent_id": "research"})
    return sid, run["id"]


@pytest.mark.parametrize(
    "argv",
    [
        ("sessions", "list", "--json"),
        ("sessions", "list"),
        ("sessions", "list", "--agent", "support", "--json"),
        ("sessions", "list", "--tag", "vip", "--limit", "1"),
        ("sessions", "list", "--status", "pending", "--json"),
        ("sessions", "show", "{sid}", "--json"),
        ("sessions", "show", "{sid}"),
        ("events", "{sid}", "--json"),
        ("events", "{sid}"),
        ("events", "{sid}", "--after", "3", "--limit", "4", "--json"),
        ("events", "{sid}", "--type", "run_completed", "--type", "run_started", "--json"),
    ],
)
def test_same_output_through_the_server_as_from_the_store(
    server: ServerThread, both: Any, argv: tuple[str, ...]
) -> None:
    sid, _ = _seed(server)
    remote, direct = both(*(a.format(sid=sid) for a in argv))
    assert remote == direct
    assert remote[0] == 0 and remote[1]


def test_errors_through_the_server_are_the_same_one_line(both: Any) -> None:
    remote, direct = both("sessions", "show", "ses_nowhere")
    assert remote[0] == direct[0] == 1
    assert remote[2].startswith("asm: error[storage.session_not_found]: ") and remote[2].count("\n") == 1
    assert direct[2].startswith("asm: error[storage.session_not_found]: ")


def test_asm_run_through_the_server(server: ServerThread, both: Any, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_URL", server.url)
    code, out, err = cli(capsys, "run", "hello over http", "--json", "--agent", "web")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "completed" and result["output"] == "hello over http" and result["provider"] == "echo"
    assert set(result) == {"session_id", "run_id", "status", "output", "usage", "cost", "provider", "model",
                           "stop_reason", "pending_tool_calls", "approvals", "error"}
    sid = result["session_id"]
    code, out, err = cli(capsys, "run", "--session", sid, "and streamed text")
    assert code == 0 and out == "and streamed text\n"
    assert err == f'session {sid}  (continue with: asm run --session {sid} "...")\n'
    monkeypatch.delenv("ASM_URL")
    remote, direct = both("events", sid, "--json")
    assert remote == direct
    assert [json.loads(line)["type"] for line in remote[1].splitlines()].count("run_completed") == 2
    monkeypatch.setenv("ASM_URL", server.url)
    code, _, err = cli(capsys, "run", "x", "--provider", "nope")
    assert code == 1 and err.startswith("asm: error[config.unknown_component]: provider: no provider named 'nope'")


def test_the_key_comes_from_asm_api_key_and_is_never_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServerThread(serve={"keys": [{"name": "ops", "token": TOKEN_OPS}]}) as srv:
        monkeypatch.setenv("ASM_URL", srv.url)
        code, _, err = cli(capsys, "sessions", "list")
        assert code == 1 and err.startswith("asm: error[auth.unauthorized]: ")
        monkeypatch.setenv("ASM_API_KEY", TOKEN_OPS)
        code, out, err = cli(capsys, "run", f"echo {TOKEN_OPS}", "--json")
        assert code == 0 and TOKEN_OPS not in out + err and "[redacted]" in out


def test_an_unreachable_asm_url_is_one_clear_error(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_URL", "http://127.0.0.1:9")
    code, _, err = cli(capsys, "sessions", "list")
    assert code == 1 and err.startswith("asm: error[storage.error]: cannot reach the asm server at http://127.0.0.1:9")
    monkeypatch.setenv("ASM_URL", "ftp://x")
    code, _, err = cli(capsys, "sessions", "list")
    assert code == 1 and "ASM_URL must be an http(s) URL" in err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM_")}
    env.update(extra)
    return env


def test_events_follow_uses_the_stream(server: ServerThread, tmp_path: Path) -> None:
    sid, _ = _seed(server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asm_kernel.cli", "events", sid, "--follow", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(ASM_URL=server.url, ASM_HOME=str(tmp_path)),
        preexec_fn=default_signals,
    )
    try:
        assert proc.stdout is not None
        lines = []
        with httpx.Client(base_url=server.url, timeout=20) as client:
            before = client.get(f"/v1/sessions/{sid}").json()["summary"]["last_seq"]
            while len(lines) < before:
                lines.append(proc.stdout.readline())
            run = client.post(f"/v1/sessions/{sid}/runs", json={"input": "arrives while following"}).json()
            while json.loads(lines[-1])["type"] != "run_completed" or json.loads(lines[-1])["run_id"] != run["id"]:
                lines.append(proc.stdout.readline())
            log = client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["items"]
        printed = [json.loads(line) for line in lines]
        assert [e["seq"] for e in printed] == list(range(1, len(printed) + 1))
        assert printed[-1]["run_id"] == run["id"]
        from asm_kernel.cli.output import event_dict
        from asm_kernel.model import Event
        from asm_kernel.serialization import dumps, from_dict

        assert lines == [dumps(event_dict(from_dict(e, Event))) + "\n" for e in log]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.endswith("asm: interrupted\n")


# -- the server file ----------------------------------------------------------------------------


def _with_store_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    import asm_kernel.cli.remote as remote

    monkeypatch.setattr(remote, "_store_file", lambda ctx: path)


def test_the_server_file_finds_the_server_and_stale_ones_are_ignored(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from asm_kernel.cli.remote import find_server

    store = tmp_path / "sessions.db"
    _with_store_file(monkeypatch, store)
    ctx = CliContext(__import__("argparse").Namespace())
    assert find_server(ctx) is None  # no file
    info = ServerFile(url=server.url, pid=os.getpid(), host=socket.gethostname(), instance=server.server.state.instance,
                      started_at="now", store=str(store))
    write_server_file(server_file_for(store), info)
    found = find_server(ctx)
    assert found is not None and found.url == server.url
    # A server that is not the one that wrote the file (the port was reused): not used.
    write_server_file(server_file_for(store), attrs.evolve(info, instance="someone-else"))
    assert find_server(ctx) is None and "is not the one that wrote" in caplog.text
    # A dead process's file: stale.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_server_file(server_file_for(store), attrs.evolve(info, pid=int(dead.stdout)))
    assert find_server(ctx) is None
    server_file_for(store).write_text("{not json")
    assert find_server(ctx) is None


def test_a_symlinked_store_path_finds_the_same_server_file(tmp_path: Path) -> None:
    real = tmp_path / "real.duckdb"
    real.touch()
    link = tmp_path / "link.duckdb"
    link.symlink_to(real)
    assert server_file_for(link) == server_file_for(real) == Path(str(real) + ".server.json")


# -- DuckDB: the server owns the file -----------------------------------------------------------


def _duckdb_v2() -> bool:
    try:
        from asm_duckdb.store import DuckDBStore
    except ImportError:
        return False
    return hasattr(DuckDBStore, "commit")


duckdb_v2 = pytest.mark.skipif(not _duckdb_v2(), reason="needs asm-duckdb with store contract v2")


def _asm(*argv: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asm_kernel.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.duckdb
@duckdb_v2
def test_while_asm_serve_owns_a_duckdb_file_the_cli_talks_to_it(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text('[store]\nuse = "duckdb"\npath = "s.duckdb"\n[serve]\nport = 0\n')
    env = _env(ASM_HOME=str(tmp_path / "home"))
    served = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_file = tmp_path / "s.duckdb.server.json"
    try:
        for _ in range(300):
            if server_file.exists():
                break
            time.sleep(0.05)
        info = json.loads(server_file.read_text())
        assert info["pid"] == served.pid and info["url"].startswith("http://127.0.0.1:")
        first = _asm("run", "owned by the server", "--json", cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr
        sid = json.loads(first.stdout)["session_id"]
        assert _asm("run", "--session", sid, "again", cwd=tmp_path, env=env).stdout == "again\n"
        through = {argv: _asm(*argv, cwd=tmp_path, env=env).stdout
                   for argv in (("sessions", "list", "--json"), ("sessions", "show", sid, "--json"),
                                ("events", sid, "--json"), ("events", sid))}
    finally:
        served.send_signal(signal.SIGTERM)
        _out, err = served.communicate(timeout=60)
    assert served.returncode == 0, err
    assert not server_file.exists()
    for argv, text in through.items():  # the file is free now: the same commands read it directly
        direct = _asm(*argv, cwd=tmp_path, env=env)
        assert direct.returncode == 0 and direct.stdout == text, argv


@pytest.mark.duckdb
@duckdb_v2
def test_events_follow_goes_on_from_the_file_when_the_server_stops(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text('[store]\nuse = "duckdb"\npath = "s.duckdb"\n[serve]\nport = 0\n')
    env = _env(ASM_HOME=str(tmp_path / "home"))
    served = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "serve"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(300):
        if (tmp_path / "s.duckdb.server.json").exists():
            break
        time.sleep(0.05)
    first = _asm("run", "through the server", "--json", cwd=tmp_path, env=env)
    sid = json.loads(first.stdout)["session_id"]
    follower = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "events", sid, "--follow", "--json"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_signals)
    try:
        assert follower.stdout is not None
        lines = [follower.stdout.readline()]
        while json.loads(lines[-1])["type"] != "run_completed":
            lines.append(follower.stdout.readline())
        served.send_signal(signal.SIGTERM)
        served.communicate(timeout=60)
        # The file is free: a run made directly reaches the follower, which now polls the file.
        second = _asm("run", "--session", sid, "straight to the file", cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr
        lines.append(follower.stdout.readline())
        while json.loads(lines[-1])["type"] != "run_completed":
            lines.append(follower.stdout.readline())
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=30)
        if served.poll() is None:
            served.kill()
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(seqs) + 1))
    assert json.loads(lines[-1])["payload"]["output"].endswith("straight to the file")
