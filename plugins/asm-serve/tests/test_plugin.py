"""The plugin: its entry point adds `asm serve`, imports no web library until the command runs,
and the kernel stays free of web dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asm_kernel.cli import build_parser


def test_the_entry_point_adds_the_serve_command() -> None:
    parser, problems = build_parser()
    assert problems == []
    args = parser.parse_args(["serve", "--host", "127.0.0.1", "--port", "0"])
    assert args.host == "127.0.0.1" and args.port == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--port", "70000"])


def test_asm_help_imports_no_web_library() -> None:
    code = textwrap.dedent("""
        import sys
        from asm_kernel.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("starlette", "uvicorn", "sse_starlette", "httpx", "asm_serve.app") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in proc.stdout and "serve" in proc.stdout


def test_the_kernel_does_not_depend_on_the_web_stack() -> None:
    kernel = Path(__file__).resolve().parents[3] / "asm_kernel"
    for path in kernel.rglob("*.py"):
        text = path.read_text()
        for name in ("starlette", "uvicorn", "sse_starlette", "httpx", "asm_serve"):
            assert f"import {name}" not in text and f"from {name}" not in text, (path, name)


def test_asm_serve_refuses_a_bad_config_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text('[store]\nuse = "memory"\n[serve]\nhost = "0.0.0.0"\n')
    proc = subprocess.run([sys.executable, "-m", "asm_kernel.cli", "serve"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("asm: error[config.invalid]: serve.host: no API key is configured")
