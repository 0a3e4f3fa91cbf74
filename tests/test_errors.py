from __future__ import annotations

import re

from asm_kernel import errors
from asm_kernel.errors import AsmError, ConfigError, ProviderError, RateLimitError, error_codes


def test_every_error_class_has_a_unique_stable_code() -> None:
    codes = error_codes()
    assert len(codes) >= 40
    categories = {
        "asm", "validation", "config", "state", "plugin", "storage", "provider", "policy", "runtime", "tool", "context"
    }
    for code, cls in codes.items():
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", code), code
        assert code.split(".")[0] in categories
        assert issubclass(cls, AsmError)
    exported = [getattr(errors, n) for n in errors.__all__ if n != "error_codes"]
    assert {c.code for c in exported} == set(codes)


def test_message_carries_path_and_hint_and_to_dict_is_json_safe() -> None:
    exc = ConfigError("unknown key", path="providers[0].modle", hint='did you mean "model"?')
    assert str(exc) == 'providers[0].modle: unknown key (did you mean "model"?)'
    data = exc.to_dict()
    assert data["code"] == "config.invalid" and data["path"] == "providers[0].modle" and not data["retryable"]


def test_provider_errors_record_retry_facts() -> None:
    exc = RateLimitError("slow down", provider="claude", model="m", status=429, retry_after=2.5, output_started=False)
    assert exc.retryable and exc.retry_after == 2.5 and exc.status == 429
    assert exc.to_dict()["retry_after"] == 2.5
    assert not ProviderError("x").retryable
    assert ProviderError("x", retryable=True).retryable
