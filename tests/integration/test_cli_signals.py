"""SIGINT/SIGTERM during `asm run`: the run is stored as cancelled and the store closed cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from asm_kernel.testing.processes import default_signals

CONFIG = """
[store]
use = "duckdb"
path = "s.duckdb"

[[providers]]
name = "slow"
use = "scripted"
turns = [[{text = "first words "}, {delay = 60}, {text = "never"}]]
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_cancels_the_run_and_records_it(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "asm.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM")}
    env["ASM_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "run", "hello"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    assert proc.stdout is not None
    assert proc.stdout.read(len("first words ")) == "first words "  # the run is streaming
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    listed = subprocess.run([sys.executable, "-m", "asm_kernel.cli", "sessions", "list", "--json"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, check=True)
    sid = json.loads(listed.stdout.splitlines()[0])["id"]
    events = subprocess.run([sys.executable, "-m", "asm_kernel.cli", "events", sid, "--json"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, check=True)
    last = json.loads(events.stdout.splitlines()[-1])
    assert last["type"] == "run_cancelled"
