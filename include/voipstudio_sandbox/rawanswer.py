"""Answers an HTTP server library refuses to send, written on the connection itself.

The vendor's command-line client met a rate-limit page whose header block held a line that
is not a header (Node's parser reports ``HPE_INVALID_HEADER_TOKEN``). uvicorn and h11 refuse
to send such a header name, so the sandbox writes the whole answer on the connection's
transport and closes it, as a misbehaving proxy in front of the service would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

#: A header line whose name holds a space: not an HTTP token. Node rejects the answer at this
#: line; Python's http.client stops reading headers there and urllib3 reports the defect.
INVALID_TOKEN_LINE = b"X-RateLimit Remaining: 0"
#: How long to wait for the server to see the connection closed before giving up.
_CLOSE_WAIT_SECONDS = 5.0


def invalid_token_answer(status: int, reason: str, retry_after: Any = None) -> bytes:
    """An error answer with :data:`INVALID_TOKEN_LINE` among its headers, ready for the wire."""
    body = json.dumps({"message": reason, "errors": [{"message": reason}]}).encode()
    lines = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        INVALID_TOKEN_LINE,
    ]
    if retry_after is not None:
        lines.append(b"retry-after: " + str(retry_after).encode())
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _transport_of(send) -> Any:
    """The connection's transport behind an ASGI ``send`` of uvicorn (its request cycle keeps
    it), or ``None`` under a server that does not expose it."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "write", None)) else None


async def write_raw_answer(send, receive, answer: bytes) -> bool:
    """Write ``answer`` on the connection and close it; ``False`` if that is not possible.

    The server is told nothing: it learns that the connection is gone when ``receive`` says
    so, and only then may the application return (else the server would answer 500 on it).
    """
    transport = _transport_of(send)
    if transport is None:
        return False
    transport.write(answer)
    transport.close()
    try:
        async with asyncio.timeout(_CLOSE_WAIT_SECONDS):
            while (await receive()).get("type") != "http.disconnect":
                pass
    except TimeoutError:
        pass
    return True
