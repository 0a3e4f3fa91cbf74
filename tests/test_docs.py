"""The docs stay true to the code.

* the generated reference pages (hooks, events, errors) equal what ``tools/docgen.py``
  renders now: change a hook, event type or error code without regenerating and this fails;
* the hand-written references name every config key and every CLI command and flag;
* every relative link in README.md and docs/ points at a file (and heading) that exists.
"""

from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from asm_kernel.errors import error_codes
from asm_kernel.events import EventType
from asm_kernel.hookspecs import hook_names

ROOT = Path(__file__).resolve().parent.parent


def _load_docgen() -> Any:
    """tools/docgen.py is a repository tool, not part of the package: load it by path."""
    spec = importlib.util.spec_from_file_location("asm_docgen", ROOT / "tools" / "docgen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_docgen = _load_docgen()

DOCS = ROOT / "docs"
REGENERATE = "stale; regenerate with: python tools/docgen.py"


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


@pytest.mark.parametrize("page", sorted(_docgen.PAGES))
def test_generated_reference_pages_are_current(page: str) -> None:
    assert (ROOT / page).is_file(), f"{page} is missing; generate it with: python tools/docgen.py"
    assert read(page) == _docgen.PAGES[page](), f"{page} is {REGENERATE}"


def test_check_mode_lists_stale_pages_and_write_fixes_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _docgen.main(["--check", "--root", str(tmp_path)]) == 1
    assert sorted(capsys.readouterr().err.split("\n")[:3]) == sorted(f"stale: {p}" for p in _docgen.PAGES)
    assert _docgen.main(["--root", str(tmp_path)]) == 0
    assert _docgen.stale(tmp_path) == []
    assert _docgen.main(["--check", "--root", str(tmp_path)]) == 0
    hooks = tmp_path / "docs/reference/hooks.md"
    hooks.write_text(hooks.read_text() + "edited by hand\n")
    assert _docgen.stale(tmp_path) == ["docs/reference/hooks.md"]


def test_every_hook_event_type_and_error_code_is_documented() -> None:
    hooks = read("docs/reference/hooks.md")
    for name in hook_names():
        assert f"### {name}\n" in hooks, name
    events = read("docs/reference/events.md")
    for member in EventType:
        assert f"### {member.value}\n" in events, member
    errors = read("docs/reference/errors.md")
    for code in error_codes():
        assert f"`{code}`" in errors, code


# -- hand-written references ------------------------------------------------------------------


def _settings_classes() -> dict[str, type]:
    """Top-level config sections backed by an attrs class (plugins, run, ...)."""
    from asm_kernel.config import Config

    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in attrs.fields(Config) if attrs.has(hints[f.name])}


def test_config_reference_names_every_key() -> None:
    from asm_kernel.builtin.echo import EchoSettings
    from asm_kernel.builtin.log import LogSettings
    from asm_kernel.builtin.policies import ApprovalSettings, BudgetSettings, ToolsSettings
    from asm_kernel.builtin.routers import CapabilitySettings
    from asm_kernel.builtin.scripted import _STEP_KEYS, ScriptedSettings
    from asm_kernel.config import _TOP_LEVEL
    from asm_kernel.tools import FunctionToolSettings

    page = read("docs/reference/config.md")
    for key in _TOP_LEVEL:
        assert f"`{key}`" in page or f"[{key}]" in page, f"top-level key {key!r} is not documented"
    for section, cls in _settings_classes().items():
        for field in attrs.fields(cls):
            assert f"`{field.name}`" in page, f"{section}.{field.name} is not documented"
    for cls in (EchoSettings, ScriptedSettings, LogSettings, CapabilitySettings, BudgetSettings, ToolsSettings,
                ApprovalSettings, FunctionToolSettings):
        for field in attrs.fields(cls):
            assert f"`{field.name}`" in page, f"{cls.__name__}.{field.name} is not documented"
    for key in _STEP_KEYS:
        assert f"`{key}" in page or f"{key} =" in page, f"scripted step key {key!r} is not documented"


def _commands() -> list[tuple[str, list[str]]]:
    """Every command path (``sessions list``) with its option strings and positionals."""
    import argparse

    from asm_kernel.cli import build_parser

    parser, _ = build_parser(with_plugins=False)
    found: list[tuple[str, list[str]]] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        flags: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())
            elif action.option_strings:
                flags.extend(s for s in action.option_strings if s not in ("-h", "--help"))
            else:
                flags.append(action.metavar or action.dest)
        found.append((path, flags))

    walk(parser, "")
    return found


def test_cli_reference_names_every_command_and_flag() -> None:
    page = read("docs/reference/cli.md")
    for path, flags in _commands():
        if path:
            assert f"asm {path}" in page, f"command `asm {path}` is not documented"
        for flag in flags:
            token = flag if flag.startswith("-") else flag.upper()
            assert token in page, f"`{token}` of `asm {path}` is not documented"


# -- links ------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)


def _markdown_files() -> list[Path]:
    files = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    readme = ROOT / "README.md"
    return ([readme] if readme.is_file() else []) + files


def _slugs(text: str) -> set[str]:
    """GitHub's heading anchors."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(text: str) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text) + _REF.findall(text)


def test_relative_links_point_at_existing_files() -> None:
    broken = []
    for source in _markdown_files():
        text = source.read_text(encoding="utf-8")
        for target in _links(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            dest = (source.parent / path).resolve() if path else source
            where = f"{source.relative_to(ROOT)} -> {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest.read_text(encoding="utf-8")):
                broken.append(f"{where}: no heading with anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)
