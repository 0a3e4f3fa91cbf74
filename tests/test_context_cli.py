"""`asm compact`, `asm fork`, `asm pin` and the context part of `asm sessions show`, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asm_kernel.cli import main

PLUGINS = Path(__file__).parent / "plugins"
CONFIG = """
[store]
use = "shared-memory"

[plugins]
modules = ["asm_shared_memory"]

[[providers]]
name = "echo"
use = "echo"
model = "echo-1"
context_window = 600

[context]
summary_max_tokens = 20
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(PLUGINS))
    (tmp_path / "asm.toml").write_text(CONFIG)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_compact_fork_pin_and_show(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("run", "first question " + "a" * 300, "--json")
    session = json.loads(out)["session_id"]
    for i in range(5):
        assert cli("run", f"question {i} " + "b" * 300, "--session", session, "--json")[0] == 0

    code, out, err = cli("sessions", "show", session)
    assert code == 0 and "context of the latest run" in out
    assert "not seen  seq " in out and "dropped (max_tokens)" in out

    code, out, _ = cli("events", session, "--json", "--type", "message_sent")
    first_seq = json.loads(out.splitlines()[0])["seq"]
    code, out, _ = cli("pin", session, str(first_seq), "--json")
    assert code == 0 and json.loads(out)["payload"] == {"seq": first_seq, "pinned": True}
    assert cli("pin", session, "1")[0] == 1  # session_created holds no message

    code, out, err = cli("compact", session, "--keep", "2")
    assert code == 0 and out.startswith("compacted seq ") and "by echo (echo-1)" in out
    code, out, _ = cli("compact", session, "--keep", "100", "--json")
    assert code == 0 and json.loads(out) is None

    cli("run", "after", "--session", session)
    code, out, _ = cli("sessions", "show", session, "--json")
    context = json.loads(out)["context"]
    assert context[0]["pinned"] == [first_seq] and context[0]["summarized"]
    code, out, _ = cli("sessions", "show", session)
    assert "replaced by the summary at seq" in out and f"pinned    seq {first_seq}" in out

    code, out, err = cli("fork", session, "--at", str(first_seq + 3), "--json")
    fork = json.loads(out)
    assert code == 0 and fork["parent_session_id"] == session and fork["at_seq"] == first_seq + 3
    code, out, _ = cli("events", fork["id"], "--json")
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types[:3] == ["session_created", "session_forked", "message_sent"]
    code, out, err = cli("fork", session, "--at", "100000")
    assert code == 1 and "at must be a seq" in err
