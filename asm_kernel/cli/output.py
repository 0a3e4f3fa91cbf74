"""How commands print: tables, event lines, JSON-safe data and config as TOML."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from .api import printable

__all__ = ["table", "event_dict", "events_table", "json_safe", "toml_value", "toml_key"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO) -> None:
    """An aligned plain-text table whose last column is cut to fit the terminal."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    width = shutil.get_terminal_size((120, 20)).columns
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
    widths[-1] = max(10, min(widths[-1], width - fixed))
    for n, row in enumerate(cells):
        parts = [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(row, widths, strict=True)]
        out.write(printable("  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip() + "\n", out))
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    out.flush()


def event_dict(event: Any) -> dict[str, Any]:
    """One event as ``asm events --json`` prints it."""
    return {
        "seq": event.seq,
        "type": event.type,
        "run_id": event.run_id,
        "timestamp": event.timestamp.isoformat(),
        "payload": event.payload,
        "id": event.id,
        "session_id": event.session_id,
        "schema_version": event.schema_version,
    }


def _summary(event: Any) -> str:
    p = event.payload
    if event.type == "routing_decided":
        return "candidates: " + ", ".join(p.get("candidates", []))
    if event.type == "run_completed":
        return f"{p.get('stop_reason')}: " + json.dumps(p.get("output", "")[:60], ensure_ascii=False)
    if "text" in p:
        return json.dumps(p["text"], ensure_ascii=False)
    if "message" in p:
        blocks = p["message"].get("content", [])
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        kinds = [b.get("type") for b in blocks if b.get("type") != "text"]
        return json.dumps(text, ensure_ascii=False) + (f" +{','.join(kinds)}" if kinds else "")
    if "error" in p:
        return f"{p['error'].get('code')}: {p['error'].get('message')}"
    if "usage" in p:
        u = p["usage"]
        return f"in={u.get('input_tokens')} out={u.get('output_tokens')}" + (
            f" cost=${p['cost']:.6f}" if p.get("cost") is not None else ""
        )
    return ", ".join(f"{k}={v}" for k, v in p.items() if v is not None and not isinstance(v, dict | list))


def events_table(events: Iterable[Any], out: TextIO) -> None:
    rows = [
        (e.seq, e.timestamp.strftime("%H:%M:%S.%f")[:-3], e.type, (e.run_id or "")[-8:], _summary(e)) for e in events
    ]
    table(rows, ["seq", "time", "type", "run", "details"], out)


def json_safe(value: Any) -> Any:
    """``value`` as data every JSON parser reads: no NaN/inf, dates as ISO text, paths as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return value


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (None, which TOML lacks, as an empty inline table's absence)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 1000 else json.dumps(json_safe(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = [f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return json.dumps(str(value), ensure_ascii=False)
