"""Plumbing every HTTP provider plugin needs, so that a new one only maps its wire format.

* :func:`error_class` and :data:`STATUS_ERRORS`: the one HTTP-status → asm-error map, refined
  by the class the provider's own error vocabulary names (its ``type``/``code``) where a status
  alone is ambiguous (a 429 that is really a spent quota, a 400 that says the prompt is too long);
* :func:`context_length`: whether an error message says the prompt is over the model's window
  (Anthropic's and OpenAI's wordings), with the token counts it gives, for
  :class:`~asm_kernel.errors.ContextLengthError`;
* :class:`ProviderCall`: the state of one call (provider, model, request id, whether output
  reached the caller, the usage reported so far) and the builder of its typed errors, with every
  registered secret and every URL password scrubbed from every field;
* :meth:`ProviderCall.settle`: the error to raise for any exception, detached from it, so an SDK
  exception (which holds the request, its headers, the key) is never chained to what asm raises;
* :class:`ClientCache`: one SDK client per event loop (their connection pools belong to the loop
  that opened them), all closed by :meth:`ClientCache.aclose`;
* :class:`ProviderBase`: name, settings, endpoint, clients, declarations and a safe repr, so a
  provider class holds only its client factory and its ``stream``;
* :func:`require_api_key`: the setting, else the environment variable, else a typed error that
  names both;
* :func:`safe_repr`, :func:`public_url`, :func:`scrub_text`: reprs and messages that never show a
  secret or a URL's userinfo;
* :class:`Deadline`: a response's ``total_timeout`` applied to each await, never across a yield;
* :func:`transport_error_class`: timeout or connection, for the HTTP library's own exceptions.

Nothing here imports a vendor SDK or an HTTP library, and importing the module does no work.
"""

from __future__ import annotations

from ._base import ClientCache, Deadline, ProviderBase
from ._errors import STATUS_ERRORS, ProviderCall, context_length, error_class, transport_error_class
from ._keys import ApiKey, find_api_key, register_header_secrets, require_api_key
from ._text import public_url, safe_repr, scrub_error, scrub_text, url_repr

__all__ = [
    "STATUS_ERRORS",
    "error_class",
    "context_length",
    "ProviderCall",
    "scrub_error",
    "scrub_text",
    "public_url",
    "safe_repr",
    "url_repr",
    "ApiKey",
    "find_api_key",
    "register_header_secrets",
    "require_api_key",
    "ClientCache",
    "ProviderBase",
    "Deadline",
    "transport_error_class",
]
