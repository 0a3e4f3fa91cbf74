"""schemathesis against the OpenAPI document: generated requests to every operation, checked for
server errors and for answers that do not match the document (status codes, content types,
headers, bodies against their schemas).

Positive cases (input the document allows) and negative ones (input it forbids, which must be
refused with a documented 4xx, never a 5xx). Examples are bounded so the suite stays fast; the
server is seeded with a session and a finished run, so ids in paths sometimes exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_helpers import TOKEN_OPS, ServerThread, auth

from asm_serve.openapi import document

MAX_AWAIT = 0.2  # await/drain timeouts are generated up to this: fast examples
MAX_EXAMPLES = 25


def _schema(mode: GenerationMode) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(document(MAX_AWAIT))
    schema.config.generation.update(modes=[mode], max_examples=MAX_EXAMPLES, deterministic=True)
    # The event stream never ends by itself; it has its own tests (test_sse.py).
    return schema.exclude(path="/v1/sessions/{session_id}/events/stream")


POSITIVE = _schema(GenerationMode.POSITIVE)
NEGATIVE = _schema(GenerationMode.NEGATIVE)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


class _Approvals:
    """An approvals component, so the approval routes answer through their handlers: without
    one they answer 501 (documented, and tested in test_api.py), which is a 5xx by definition."""

    async def pending(self, session_id: str) -> list[dict[str, Any]]:
        return []

    async def decide(self, run_id: str, call_id: str, *, approve: bool, reason: str | None, actor: str) -> Any:
        return {"run_id": run_id, "call_id": call_id, "approved": approve}


@pytest.fixture(scope="module")
def live() -> Iterator[ServerThread]:
    import httpx

    keys = [{"name": "ops", "token": TOKEN_OPS}]
    with ServerThread(serve={"keys": keys, "max_await": MAX_AWAIT}) as srv:
        srv.kernel.approvals = _Approvals()  # type: ignore[attr-defined]
        with httpx.Client(base_url=srv.url, headers=auth(TOKEN_OPS), timeout=10) as client:
            sid = client.post("/v1/sessions", json={"id": "seeded", "tags": ["a"]}).json()["id"]
            run = client.post(f"/v1/sessions/{sid}/runs", json={"input": "seed"}).json()
            client.get(f"/v1/runs/{run['id']}/await", params={"timeout": MAX_AWAIT})
        yield srv


_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=MAX_EXAMPLES)


@POSITIVE.parametrize()
@_SETTINGS
def test_generated_requests_get_documented_answers(case: schemathesis.Case, live: ServerThread) -> None:
    case.call_and_validate(base_url=live.url, headers=auth(TOKEN_OPS), checks=CHECKS, timeout=10)


@NEGATIVE.parametrize()
@_SETTINGS
def test_invalid_requests_are_refused_without_a_server_error(case: schemathesis.Case, live: ServerThread) -> None:
    case.call_and_validate(base_url=live.url, headers=auth(TOKEN_OPS),
                           checks=[not_a_server_error, content_type_conformance], timeout=10)
