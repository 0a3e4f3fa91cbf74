"""Mutated configs never give a traceback: `asm config check`, `config show` and `sessions list`
exit 0, or print one `asm: error[...]` line, and never show an interpolated value.

Valid configs are mutated (keys deleted, added, misspelt and renamed; values replaced by other
types, unicode, lone surrogates, huge numbers, NaN and infinities, `${VAR}` interpolations of
a canary; values nested in arrays and tables; deep nesting) and written to real files, some
then damaged byte by byte (invalid UTF-8, truncation). A seeded loop covers thousands of cases
in-process, Hypothesis explores more, and a sample runs as real subprocesses.

Generated strings never hold a path separator, so no mutation can point a store outside the
test's directory; `plugins.modules` names are replaced by missing ones, so no mutation imports
an arbitrary module.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from asm_kernel.cli import main

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # the kernel-alone tox env installs no hypothesis; the seeded loop still runs
    given = None  # type: ignore[assignment]

#: Interpolated into configs; shorter than the redactor's minimum, so only message
#: construction (not the output redaction) can keep it out of what asm prints.
CANARY = "Qz9xK"
#: A long one: the output redaction must hide it too.
SECRET = "sk-fuzz-canary-0123456789abcdef"
COMMANDS = (["config", "check"], ["config", "show", "--json"], ["sessions", "list"])

BASES: list[dict[str, Any]] = [
    {"store": {"use": "memory"}},
    {
        "store": {"use": "memory"},
        "providers": [{"name": "e", "use": "echo", "prefix": "${ASM_FUZZ_CANARY}", "chunk_size": 4, "delay": 0.0}],
        "run": {"provider": "e", "system": "be brief", "max_turns": 3, "max_tokens": 100, "temperature": 0.5,
                "requires": ["streaming"], "prefers": ["usage"], "agent_id": "a"},
        "runtime": {"max_concurrent_runs": 2, "idle_timeout": 30.0, "on_paused": "reject", "lease_ttl": 10.0},
        "resilience": {"max_attempts": 3, "initial_backoff": 0.1, "jitter": False, "deadline": 60.0},
        "plugins": {"disabled": ["nothing-here"], "autoload": True},
    },
    {
        "store": {"use": "memory"},
        "providers": [
            {"name": "s", "use": "scripted", "turns": [[{"text": "hi"}, {"usage": {"input_tokens": 3}}]],
             "capabilities": ["streaming", "tools"], "api_token": "${ASM_FUZZ_SECRET}"},
            {"name": "e", "use": "echo", "model": "echo-2"},
        ],
        "router": {"use": "capability", "prefer": ["e", "s"], "weights": {"e": 2.0, "s": 1.0}, "sticky": False},
        "telemetry": [{"use": "log", "level": "debug", "payloads": False}],
    },
    {"store": {"use": "duckdb", "path": "fuzz.duckdb", "durability": "fast", "lock_timeout": 0}, "home": "h"},
    {
        "store": {"use": "memory"},
        "providers": [{"name": "gpt", "use": "openai", "api": "chat", "api_key": "${ASM_FUZZ_SECRET}",
                       "base_url": "http://127.0.0.1:9/v1", "model": "m",
                       "models": {"m": {"context_window": 8000, "input_price": 0.1}}, "headers": {"x-a": "b"}}],
    },
    {
        "store": {"use": "memory"},
        "providers": [{"name": "c", "use": "anthropic", "api_key": "${ASM_FUZZ_CANARY}", "thinking": "enabled",
                       "thinking_budget": 2048, "models": {"c-1": {"context_window": 1000}}, "cache_ttl": "1h"}],
        "run": {"provider": "c"},
    },
]

KEYS = ["use", "name", "path", "model", "prefix", "chunk_size", "delay", "turns", "api_key", "base_url",
        "max_turns", "temperature", "requires", "providers", "store", "run", "runtime", "plugins", "modules",
        "disabled", "home", "weights", "prefer", "level", "durability", "lock_timeout", "thinking", "models"]


def _text(rng: random.Random) -> str:
    pools = ["abc", "é", "\u202e", "😀", "\x00", "\x7f", "\n", '"', "\\", "${", "}", " ", "\ud800", "\udcff",
             "echo", "memory", "duckdb", "scripted", "capability", "log", "0", "-1", "日本"]
    text = "".join(rng.choice(pools) for _ in range(rng.randint(0, 6)))
    return _safe(text)


def _safe(text: str) -> str:
    """No separator, no leading dot or tilde: no generated path may leave the test directory."""
    text = text.replace("/", "_").replace("\\", "_").replace(":", "_")
    return "x" + text if text.startswith((".", "~")) else text


def _value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        lambda: _text(rng), lambda: rng.randint(-5, 5), lambda: rng.choice([0, 1, -1, 10**18, 10**30, -(10**40)]),
        lambda: rng.choice([0.0, -0.5, 1e308, 1e-308, math.nan, math.inf, -math.inf, 2.5]),
        lambda: rng.choice([True, False]), lambda: dt.date(2026, 1, 2), lambda: dt.datetime(2026, 1, 2, 3, 4, 5),
        lambda: rng.choice(["${ASM_FUZZ_CANARY}", "${ASM_FUZZ_SECRET}", "p-${ASM_FUZZ_CANARY}-q", "${ASM_FUZZ_UNSET}",
                            "${ASM_FUZZ_UNSET:-dflt}", "a${ASM_FUZZ_UNSET}b", "${NOT VALID}"]),
        lambda: [] if depth > 2 else [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        lambda: {} if depth > 2 else {_safe(rng.choice(KEYS)): _value(rng, depth + 1) for _ in range(rng.randrange(4))},
    ]
    return rng.choice(choices)()


def _nodes(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, data
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _nodes(value, (*path, key))


class Deep:
    """A value nested ``depth`` levels deep, written as TOML text (building it would recurse)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def toml(self) -> str:
        return "[{k = " * (self.depth // 2) + "1" + "}]" * (self.depth // 2)


def mutate(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        node = rng.choice([n for _, n in _nodes(data) if isinstance(n, dict | list)])
        op = rng.randrange(8)
        if isinstance(node, list):
            if op < 3 and node:
                node[rng.randrange(len(node))] = _value(rng)
            elif op < 5:
                node.append(_value(rng) if op == 3 else copy.deepcopy(node[0]) if node else {})
            elif node:
                del node[rng.randrange(len(node))]
            continue
        keys = list(node)
        if op == 0 and keys:
            del node[rng.choice(keys)]
        elif op == 1:
            node[_safe(rng.choice([*KEYS, _text(rng)]))] = _value(rng)
        elif op == 2 and keys:
            key = rng.choice(keys)
            node[key[:-1] + "x" if key else "x"] = node.pop(key)  # a misspelling
        elif op == 3 and keys:
            node[rng.choice(keys)] = _value(rng)
        elif op == 4 and keys:
            key = rng.choice(keys)
            node[key] = rng.choice([[node[key]], {"inner": node[key]}])
        elif op == 5 and keys:
            node[rng.choice(keys)] = Deep(rng.choice([10, 70, 300, 1000]))
        elif op == 6:
            node[rng.choice(keys) if keys else "k"] = rng.choice(["", " ", "\x00", "\ud800", "😀" * 50, "a" * 5000])
        elif keys:
            key = rng.choice(keys)
            node[_safe(rng.choice(KEYS))] = node.pop(key)  # renamed to another known key
    plugins = data.get("plugins")
    if isinstance(plugins, dict) and isinstance(plugins.get("modules"), list):
        plugins["modules"] = [f"asm_fuzz_missing_{i}" if isinstance(m, str) else m
                              for i, m in enumerate(plugins["modules"])]
    return data


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Deep):
        return value.toml()
    raise TypeError(type(value))


def to_toml(data: dict[str, Any], pyproject: bool = False) -> bytes:
    lines = ["[tool.asm]"] if pyproject else []
    lines += [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in data.items()]
    # Lone surrogates become the bytes they would be in UTF-16-ish UTF-8: invalid UTF-8, on purpose.
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def damage(rng: random.Random, raw: bytes) -> bytes:
    op = rng.randrange(6)
    at = rng.randrange(len(raw) + 1)
    if op == 0:
        return raw[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + raw[at:]
    if op == 1:
        return raw[:at]  # truncated
    if op == 2:
        return b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")  # a BOM and CRLF: still valid
    if op == 3 and raw:
        flipped = bytearray(raw)
        flipped[min(at, len(raw) - 1)] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if op == 4:
        return raw + b"x = " + b"[" * 600 + b"]" * 600 + b"\n"
    return raw + raw  # every key twice: TOML refuses


@contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check(code: int, out: str, err: str, what: str) -> None:
    """The contract for every command on every config."""
    assert "Traceback" not in err and "internal error" not in err, f"{what}\n{err}"
    assert CANARY not in out + err and SECRET not in out + err, f"{what}: an interpolated value is shown\n{out}{err}"
    lines = err.splitlines()
    assert all(line.startswith("asm: ") for line in lines), f"{what}: stray stderr\n{err}"
    errors = [line for line in lines if line.startswith("asm: error[")]
    if code == 0:
        assert not errors, f"{what}\n{err}"
    else:
        assert code == 1 and len(errors) == 1 and lines[-1] == errors[0], f"{what}: exit {code}\n{err}"


def run_case(case_dir: Path, raw: bytes, env: dict[str, str], name: str = "asm.toml") -> None:
    case_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / name).write_bytes(raw)
    config = str(case_dir / name)
    with _env(env):
        for command in COMMANDS:
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = main(["--config", config, *command])
            check(code, out.getvalue(), err.getvalue(), f"{' '.join(command)} on {raw[:300]!r} env={env}")
            if command[1:] == ["show", "--json"] and code == 0:
                json.loads(out.getvalue())  # valid JSON, NaN and all


def _env_mutation(rng: random.Random) -> dict[str, str]:
    if rng.random() > 0.2:
        return {}
    key = rng.choice(["ASM__RUN__MAX_TURNS", "ASM__STORE__USE", "ASM__PROVIDERS__0__MODEL", "ASM__RUN__SYSTEM",
                      "ASM__PROVIDERS__9__X", "ASM__STORE__USE__DEEPER", "ASM__PLUGINS__DISABLED", "ASM__HOME"])
    value = rng.choice(["0", "x", "[1, 2]", "{a = 1}", "nan", "${ASM_FUZZ_CANARY}", "[" * 500, "9" * 5000,
                        '"quoted"', "true", _text(rng)])
    # The environment holds bytes: a lone surrogate arrives as the bytes it stands for.
    raw = value.replace("\x00", "").encode("utf-8", "surrogatepass")  # and no NUL, which it cannot hold
    return {key: raw.decode("utf-8", "surrogateescape")}


@pytest.fixture
def fuzz_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_FUZZ_CANARY", CANARY)
    monkeypatch.setenv("ASM_FUZZ_SECRET", SECRET)
    monkeypatch.delenv("ASM_FUZZ_UNSET", raising=False)


def test_mutated_configs_never_give_a_traceback(tmp_path: Path, fuzz_env: None) -> None:
    rng = random.Random(20261127)
    cases = 3000
    for i in range(cases):
        base = BASES[i % len(BASES)]
        data = mutate(rng, base) if i % 10 else base  # the bases themselves too
        raw = to_toml(data, pyproject=i % 7 == 0)
        if i % 5 == 4:
            raw = damage(rng, raw)
        name = "pyproject.toml" if i % 7 == 0 else "asm.toml"
        run_case(tmp_path / f"c{i % 50}", raw, _env_mutation(rng), name)


if given is None:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_hypothesis_mutated_configs_never_give_a_traceback() -> None:
        """Runs where hypothesis is installed."""

else:

    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        base=st.sampled_from(BASES),
        seed=st.integers(0, 2**32),
        extra=st.dictionaries(
            st.text(max_size=8).map(_safe), st.recursive(
                st.booleans() | st.integers() | st.floats() | st.text(max_size=12).map(_safe),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5).map(_safe), inner,
                                                                              max_size=3),
                max_leaves=8,
            ), max_size=3,
        ),
        section=st.sampled_from(["", "run", "runtime", "store", "plugins", "resilience"]),
    )
    def test_hypothesis_mutated_configs_never_give_a_traceback(
        tmp_path: Path, fuzz_env: None, base: dict[str, Any], seed: int, extra: dict[str, Any], section: str
    ) -> None:
        data = mutate(random.Random(seed), base)
        target = data.setdefault(section, {}) if section else data
        if isinstance(target, dict):
            target.update(extra)
        run_case(tmp_path / "h", to_toml(data), {})


def test_a_sample_of_mutated_configs_as_real_processes(tmp_path: Path, fuzz_env: None) -> None:
    rng = random.Random(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM") or k.startswith("ASM_FUZZ")}
    env["ASM_HOME"] = str(tmp_path / "home")
    for i in range(6):
        raw = to_toml(mutate(rng, BASES[i % len(BASES)]))
        if i % 2:
            raw = damage(rng, raw)
        (tmp_path / "asm.toml").write_bytes(raw)
        for command in COMMANDS:
            proc = subprocess.run([sys.executable, "-m", "asm_kernel.cli", *command], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)
            check(proc.returncode, proc.stdout, proc.stderr, f"{' '.join(command)} on {raw[:300]!r}")
