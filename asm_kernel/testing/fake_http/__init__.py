"""The common base of wire-faithful fake provider servers: real HTTP on 127.0.0.1.

A provider plugin's fake server (``asm_openai.testing.FakeOpenAI``,
``asm_anthropic.testing.FakeAnthropic``) subclasses :class:`FakeHTTPServer` and keeps only its
wire format: it turns its own scripted replies into the transport-level responses defined
here. Everything else is shared: a threaded server on a free port, a FIFO script of responses
per route, a record of every request, and the faults tests need::

    with MyFake() as fake:                       # a started server; stopped on exit
        fake.script(JsonResponse(200, {"ok": True}), route="/v1/things")
        fake.script(SSEResponse([SSEEvent({"n": 1}), SSEEvent({"n": 2})], end="drop"))
        fake.script(lambda request: JsonResponse(401, {"echo": request.headers["authorization"]}))
        ...                                      # point the SDK at fake.url
        assert fake.last.body == {...}

Responses: :class:`JsonResponse` (status, headers, JSON or raw body), :class:`SSEResponse`
(server-sent events with delays and pauses, ending cleanly, dropping the connection or hanging),
:class:`RawResponse` (bytes written verbatim: a malformed status line or header), :class:`Stall`
(no answer at all). A callable in the script is called with the :class:`RecordedRequest` and
its result is answered: that is how a fake reflects what it received.

Canary tests (a fake that echoes the client's :attr:`RecordedRequest.credentials` back in every
way a server can) search what asm produced with :func:`error_texts`, :func:`captured_logs` and
:func:`assert_no_secrets`.

Standard library and attrs only; nothing here needs pytest.
"""

from ._canary import assert_no_secrets, captured_logs, error_texts
from ._records import JsonResponse, RawResponse, RecordedRequest, Response, SSEEvent, SSEResponse, Stall
from ._server import FakeHTTPServer

__all__ = [
    "FakeHTTPServer",
    "RecordedRequest",
    "JsonResponse",
    "SSEEvent",
    "SSEResponse",
    "RawResponse",
    "Stall",
    "Response",
    "error_texts",
    "assert_no_secrets",
    "captured_logs",
]
