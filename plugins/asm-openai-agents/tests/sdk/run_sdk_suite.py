"""Run the OpenAI Agents SDK's own session tests against ``AsmSession``.

Downloads the source distribution of the pinned SDK version with pip (it ships the SDK's test
suite), unpacks it and runs the test modules that exercise sessions with the
``asm_sdk_shim`` pytest plugin (see its docstring for how ``SQLiteSession`` is rebound). Usage::

    python run_sdk_suite.py --dest /tmp/oa-sdk [--version 0.24.0] [pytest args...]

Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Test modules that build sessions through SQLiteSession, relative to the sdist.
MODULES = [
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/memory/test_compaction_model_visibility.py",
    "tests/memory/test_openai_responses_compaction_session.py",
    "tests/test_tool_batch_failure_history.py",
    "tests/test_native_tool_failure_history.py",
    "tests/test_max_turns.py",
    "tests/test_programmatic_tool_calling.py",
    "tests/test_run_impl_resume_paths.py",
    "tests/test_tool_failure_boundaries.py",
    "tests/test_soft_cancel.py",
]


def fetch(version: str, dest: Path) -> Path:
    root = dest / f"openai_agents-{version}"
    if (root / "tests").is_dir():
        return root
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"openai-agents=={version}", "--dest", str(dest)],
        check=True,
    )
    with tarfile.open(dest / f"openai_agents-{version}.tar.gz") as archive:
        archive.extractall(dest, filter="data")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.24.0")
    parser.add_argument("--dest", type=Path, required=True)
    args, pytest_args = parser.parse_known_args()
    root = fetch(args.version, args.dest)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("ASM_HOME", str(args.dest / "asm-home"))
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "asm_sdk_shim", "-rsx",
               *MODULES, *pytest_args]
    return subprocess.call(command, cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main())
