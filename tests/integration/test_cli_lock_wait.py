"""A CLI command says on stderr, while it waits, which process holds the DuckDB file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HOLDER = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()  # hold the file until the test says so
conn.close()
"""


def test_sessions_list_says_who_holds_the_store_file_while_it_waits(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text('[store]\nuse = "duckdb"\npath = "s.duckdb"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM")}
    env["ASM_HOME"] = str(tmp_path / "home")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "s.duckdb")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "holding\n"
        waiting = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "sessions", "list", "--json"],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        # The line comes while the other process still holds the file, and names it.
        assert holder.poll() is None and waiting.poll() is None
        assert line.startswith(f"asm: store file {tmp_path / 's.duckdb'} is in use by another process "
                               f"(PID {holder.pid}); retrying"), line
        holder.stdin.write("release\n")
        holder.stdin.flush()
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0 and out == "", err
        assert "Traceback" not in err
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipes
