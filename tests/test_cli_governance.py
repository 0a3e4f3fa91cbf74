"""``asm approvals``, ``asm approve`` and ``asm cost``; an approval across real process restarts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus
from asm_kernel.cli import main
from asm_kernel.cli.output import toml_value

PLUGINS = Path(__file__).parent / "plugins"
ROUND = [
    {"text": "I will clean up."},
    {"tool_use": {"id": "t_lookup", "name": "lookup", "input": {"q": "old"}}},
    {"tool_use": {"id": "t_delete", "name": "delete_file", "input": {"path": "/tmp/x"}}},
    {"usage": {"input_tokens": 30, "output_tokens": 12}},
]
ANSWER = [{"text": "Cleaned up."}, {"usage": {"input_tokens": 60, "output_tokens": 5}}]


def toml_config(turns: list[list[dict[str, Any]]]) -> str:
    return "\n".join([
        '[store]\nuse = "saved"\npath = "store.pickle"',
        '[plugins]\nmodules = ["asm_savedstore", "asm_governance_tools"]\nautoload = false',
        '[[providers]]\nuse = "scripted"\nname = "s"\nturns = ' + toml_value(turns),
        '[[tools]]\nuse = "lookup"\n[[tools]]\nuse = "delete_file"',
        '[[policies]]\nuse = "approval"\ntools = ["delete_*"]\ntimeout = 600',
    ]) + "\n"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.syspath_prepend(str(PLUGINS))
    log = tmp_path / "tools.log"
    monkeypatch.setenv("ASM_TEST_TOOL_LOG", str(log))
    first = tmp_path / "first.toml"
    first.write_text(toml_config([ROUND]))
    later = tmp_path / "later.toml"
    later.write_text(toml_config([ANSWER]))
    yield {"first": first, "later": later, "log": log}
    for name in ("asm_savedstore", "asm_governance_tools"):
        sys.modules.pop(name, None)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_approve_and_cost_from_the_shell(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    first = str(setup["first"])
    code, out, err = cli(capsys, "--config", first, "run", "clean up old files", "--json")
    assert code == 1
    result = json.loads(out)
    run_id = result["run_id"]
    assert result["status"] == "awaiting_approval" and result["approvals"][0]["tool_use_id"] == "t_delete"
    assert f"run {run_id} awaits approval of delete_file t_delete" in err and f"asm approve {run_id}" in err
    code, out, _ = cli(capsys, "--config", first, "approvals", "--json")
    (listed,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and listed["run_id"] == run_id and listed["input"] == {"path": "/tmp/x"}
    code, out, _ = cli(capsys, "--config", first, "approvals")
    assert code == 0 and "t_delete" in out and "delete_file" in out
    code, out, err = cli(capsys, "--config", first, "approve", run_id, "t_nope", "--by", "alice")
    assert code == 1 and "no open approval request" in err and "t_delete" in err
    code, out, err = cli(capsys, "--config", first, "approve", run_id, "t_delete", "--by", "alice",
                         "--reason", "fine", "--json")
    assert code == 0 and json.loads(out) == {"run_id": run_id, "session_id": result["session_id"],
                                             "status": "pending", "decision": "approved", "decided_by": "alice"}
    assert not setup["log"].exists()  # nothing ran: the CLI decides, a runtime continues

    async def application() -> Any:  # started again, it continues the run
        async with Kernel.open(setup["later"]) as kernel:
            await kernel.runtime.start()
            return await kernel.runtime.await_run(run_id)

    done = asyncio.run(application())
    assert done.status is RunStatus.COMPLETED and done.output == "Cleaned up."
    assert sorted(setup["log"].read_text().split()) == ["delete_file", "lookup"]  # they ran at once
    code, out, err = cli(capsys, "--config", first, "cost", "--by", "session", "--json")
    report = json.loads(out)
    assert code == 0 and report["by"] == "session" and report["total"]["calls"] == 2
    assert report["total"]["cost_usd"] is None and report["total"]["unknown_cost_calls"] == 2
    code, out, err = cli(capsys, "--config", first, "cost")
    assert code == 0 and "unknown" in out and "their cost is unknown, not zero" in err


def test_a_denial_from_the_shell_and_a_bad_since(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    first = str(setup["first"])
    _, out, _ = cli(capsys, "--config", first, "run", "clean up", "--json")
    run_id = json.loads(out)["run_id"]
    code, out, err = cli(capsys, "--config", first, "approve", run_id, "--deny", "--reason", "no", "--by", "bob")
    assert code == 0 and out.strip() == "pending" and "bob denied run" in err
    code, _, err = cli(capsys, "--config", first, "approve", run_id, "--by", "bob")
    assert code == 1 and "is pending, not awaiting approval" in err
    code, _, err = cli(capsys, "--config", first, "cost", "--since", "last tuesday")
    assert code == 1 and "error[validation.invalid]" in err and "span back from now" in err


def test_an_approval_survives_real_process_restarts(setup: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
           "ASM_TEST_TOOL_LOG": str(setup["log"])}

    def asm(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "asm_kernel.cli", "--config", str(config), *argv],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    # Process 1 runs until the run needs a person, and exits.
    first = asm(setup["first"], "run", "clean up old files", "--json")
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    # Process 2 records the decision.
    approved = asm(setup["first"], "approve", run_id, "t_delete", "--by", "alice")
    assert approved.returncode == 0 and approved.stdout.strip() == "pending", approved.stderr
    assert not setup["log"].exists()
    # Process 3, the application started again, continues the run from its log.
    script = (
        "import asyncio, json, sys\n"
        "from asm_kernel import Kernel\n"
        "async def main():\n"
        f"    async with Kernel.open({str(setup['later'])!r}) as k:\n"
        "        await k.runtime.start()\n"
        f"        r = await k.runtime.await_run({run_id!r})\n"
        "        events = await k.sessions.events(r.session_id)\n"
        "        print(json.dumps({'status': r.status.value, 'output': r.output,\n"
        "                          'types': [e.type for e in events]}))\n"
        "asyncio.run(main())\n"
    )
    third = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=120)
    assert third.returncode == 0, third.stderr
    outcome = json.loads(third.stdout)
    assert outcome["status"] == "completed" and outcome["output"] == "Cleaned up."
    assert sorted(setup["log"].read_text().split()) == ["delete_file", "lookup"]  # they ran at once
    types = outcome["types"]
    assert types.count("message_sent") == 1 and types.count("approval_granted") == 1
    assert types[-1] == "run_completed"
