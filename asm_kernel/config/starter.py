"""The commented starter config ``asm init`` writes."""

from __future__ import annotations

from ..registry import install_hint

__all__ = ["STARTER_CONFIG", "starter_config"]

_TEMPLATE = """\
# asm configuration. Every key is documented in docs/reference/config.md.
# Values like ${VAR} are read from the environment when asm starts; they are never stored.

[store]
use = "duckdb"                 # the embedded default (<asm-duckdb>); "memory" keeps nothing
path = "sessions.duckdb"       # relative to this file

[[providers]]
name = "echo"                  # what runs and `asm run --provider` refer to
use = "echo"                   # offline provider that answers with your input

# [[providers]]
# name = "claude"
# use = "anthropic"            # <asm-anthropic>
# model = "claude-sonnet-5-5"
# api_key = "${ANTHROPIC_API_KEY}"

# [[providers]]
# name = "local"
# use = "openai"               # <asm-openai>; any OpenAI-compatible server
# api = "chat"
# base_url = "http://127.0.0.1:8000/v1"
# model = "qwen3"

[run]
# provider = "echo"            # default provider for runs (else the first one above)
# system = "You are a helpful assistant."
max_turns = 8                  # model calls per run when tools are involved

[plugins]
disabled = []                  # plugin names never to import
modules = []                   # your own hook modules, e.g. ["my_hooks"]
"""

_PLUGINS = ("asm-duckdb", "asm-anthropic", "asm-openai")


def starter_config() -> str:
    """The starter config, its install comments naming what is installable from here."""
    text = _TEMPLATE
    for distribution in _PLUGINS:
        text = text.replace(f"<{distribution}>", install_hint(distribution))
    return text


#: The starter config with install comments for a released asm (``pip install asm-duckdb``).
STARTER_CONFIG = _TEMPLATE
for _distribution in _PLUGINS:
    STARTER_CONFIG = STARTER_CONFIG.replace(f"<{_distribution}>", f"pip install {_distribution}")
