"""The HTTP exchange of the token fetchers: one request whose 2xx reply must be a small JSON object.

Shared by ``jwtlogin`` and ``oidc``. What it guarantees, whatever the endpoint sends:

* Memory: at most MAX_TOKEN_RESPONSE bytes are held, counted on the wire AND after decoding. A reply announcing
  more is refused before reading; otherwise the raw body is read piece by piece and inflated by the daemon's
  own bounded ``GzipDecoder`` (httpx's decoder inflates each network read whole: a 400 KB gzip reply made
  865 MB). Only gzip is asked for (``Accept-Encoding: gzip``); any other coding is refused.
* Redirects: a POST is never redirected (a 307/308 would repeat the credentials to wherever it points). A GET
  (discovery) follows at most MAX_REDIRECTS redirects, and only within its own origin (RFC 6454: scheme, host
  and port): a redirect to plain http or to another host would let that place choose the token endpoint the
  client's secret is then sent to.
* Errors are TokenError whose message names the endpoint (without userinfo or query string), the status and a
  short fixed reason, never credentials, tokens or the response body (which may echo what was sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httpx
import orjson

from pfxhttp.backend.contentcoding import GzipDecoder, response_is_gzip
from pfxhttp.errors import BackendBodyTooLarge, BackendProtocolError, TokenError

# A token reply or a discovery document is a few KiB at most; the cap keeps a broken endpoint from filling memory.
MAX_TOKEN_RESPONSE = 256 * 1024
# Identity providers redirect a discovery URL once or twice (a trailing slash, a realm alias); more is a loop.
MAX_REDIRECTS = 5
# What httpx may still hand out of a closed response (see _abandon): one buffered network read, in pieces.
ABANDON_STEPS = 1024
# RFC 9110 section 15.4: the redirects that carry a Location to repeat a GET at.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# RFC 6749 section 5.2: the registered error codes of a token endpoint. They are fixed words, so naming one
# in a message is safe, unlike any other text of an error body.
OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


def endpoint_label(url: str) -> str:
    """``scheme://host:port/path`` for messages and store keys: userinfo and query may carry secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """RFC 6454 origin of an absolute URL: scheme, host and port (None when it is the scheme's default)."""
    return (url.scheme, url.host, url.port)


def _status_reason(status: int, body: bytes) -> str:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and document.get("error") in OAUTH_ERRORS:
        return str(document["error"])
    if status in (401, 403):
        return "credentials refused" if status == 401 else "forbidden"
    if status == 429:
        return "rate limited"
    if 300 <= status < 400:
        return "redirect not followed"
    return "server error" if status >= 500 else "unexpected status"


async def _read_capped(response: httpx.Response, label: str) -> bytes:
    """The decoded body, at most MAX_TOKEN_RESPONSE bytes raw and decoded; TokenError beyond."""
    status = response.status_code
    codings = b",".join(value for name, value in response.headers.raw if name.lower() == b"content-encoding")
    try:
        decoder = GzipDecoder(MAX_TOKEN_RESPONSE) if response_is_gzip(codings) else None
    except BackendProtocolError:
        # Fixed text: the exception quotes the Content-Encoding field the server chose.
        raise TokenError(f"{label}: HTTP {status}: unsupported or corrupt content coding") from None
    parts: list[bytes] = []
    received = 0
    chunks = response.aiter_raw()
    try:
        async for chunk in chunks:
            # The raw count matters for gzip too: empty deflate blocks inflate to nothing, without end.
            received += len(chunk)
            if received > MAX_TOKEN_RESPONSE:
                raise BackendBodyTooLarge
            parts.append(chunk if decoder is None else decoder.feed(chunk))
        if decoder is not None:
            decoder.finish()
    except BackendBodyTooLarge:
        await _abandon(response, chunks)
        raise TokenError(f"{label}: HTTP {status}: response over {MAX_TOKEN_RESPONSE} bytes") from None
    except BackendProtocolError:
        await _abandon(response, chunks)
        raise TokenError(f"{label}: HTTP {status}: unsupported or corrupt content coding") from None
    return b"".join(parts)


async def _abandon(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Stop reading a body half-way: close the connection, then let httpx's generators run to their end.

    ``aiter_raw`` sits on four nested async generators (httpx and httpcore). Leaving them suspended hands them to
    the garbage collector, and trio warns about each (encode/httpx#3686); closing the outer one with ``aclose``
    does not close the inner ones. Driven on after the close, they end at once: with what the HTTP parser had
    already buffered (one network read at most), then a read error from the closed connection, which passes
    through every one of them. Bounded anyway: ABANDON_STEPS pieces at most, none of them kept."""
    await response.aclose()
    try:
        for _ in range(ABANDON_STEPS):
            await anext(chunks)
    except (StopAsyncIteration, httpx.HTTPError, httpx.StreamError):  # the end, however it comes
        return


async def _exchange(
    http: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    label: str,
    headers: Mapping[str, str],
    content: bytes | None,
    follow: bool,
) -> tuple[int, bytes, httpx.URL | None]:
    """One request: (status, body, redirect target when ``follow`` and the reply is a redirect)."""
    async with http.stream(method, url, headers=headers, content=content, follow_redirects=False) as response:
        status = response.status_code
        location = response.headers.get("location")
        if follow and status in REDIRECT_STATUSES and location:
            return status, b"", url.join(location)  # RFC 9110 section 10.2.2: relative to the request URL
        # Refused before reading when announced, so nothing of it is read at all.
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TOKEN_RESPONSE:
            raise TokenError(f"{label}: HTTP {status}: response over {MAX_TOKEN_RESPONSE} bytes")
        return status, await _read_capped(response, label), None


async def request_json(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str],
    content: bytes | None = None,
) -> dict[str, object]:
    """One request whose 2xx reply must be a JSON object; every failure is a log-safe TokenError.

    A GET follows same-origin redirects (at most MAX_REDIRECTS); a POST follows none."""
    label = f"{what} {endpoint_label(url)}"
    # Only gzip: the one coding the bounded decoder reads (httpx would otherwise offer deflate, br, zstd).
    sent = {**headers, "Accept-Encoding": "gzip"}
    follow = method == "GET"
    try:
        target = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            status, body, redirect = await _exchange(http, method, target, label, sent, content, follow)
            if redirect is None:
                break
            if origin(redirect) != origin(target):
                raise TokenError(
                    f"{label}: HTTP {status}: redirect to {endpoint_label(str(redirect))} refused"
                    " (not the same origin)"
                )
            target = redirect
        else:
            raise TokenError(f"{label}: more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as exc:
        raise TokenError(f"{label}: timed out") from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise TokenError(f"{label}: transport error ({type(exc).__name__})") from exc
    if not 200 <= status < 300:
        raise TokenError(f"{label}: HTTP {status} ({_status_reason(status, body)})")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise TokenError(f"{label}: HTTP {status}: reply is not JSON") from None
    if not isinstance(document, dict):
        raise TokenError(f"{label}: HTTP {status}: reply is not a JSON object")
    return document
