"""CORS: which web pages may call the HTTP API from a browser (`--cors-origins`, none by default).

Before a request with an API key, a JSON body or Willow's `x-audio-*` headers, a browser sends a
preflight `OPTIONS` with `Origin` and `Access-Control-Request-Method`, without credentials, so it
is answered here, before the key is checked. Every response to an allowed origin says so: the
headers are added when a response is prepared (the `on_response_prepare` signal), not after its
handler returns, because a streamed response (server-sent events, `/api/sts`) has sent its
headers long before that; errors (a 401 included) carry them too, so the page can read them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

ALLOWED_METHODS = ("GET", "POST", "DELETE", "OPTIONS")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-API-Key",
    "X-Audio-Sample-Rate",
    "X-Audio-Bits",
    "X-Audio-Channel",
    "X-Audio-Codec",
)
# Headers a page may read from a response (beyond the CORS-safelisted ones).
EXPOSED_HEADERS = ("X-WIS-Cache", "X-WIS-Transcript", "X-WIS-Language", "X-Sample-Rate")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


@dataclass(frozen=True)
class CorsPolicy:
    origins: tuple[str, ...] = ()  # lower-case scheme://host[:port], or "*" for any

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.origins or str(origin).lower() in self.origins)

    def allow_origin(self, origin: str) -> str:
        return "*" if "*" in self.origins else origin


def install_cors(app: web.Application, origins: tuple[str, ...] | list[str]) -> None:
    """Answer preflights (ahead of every other middleware) and mark allowed responses."""
    policy = CorsPolicy(tuple(origins))
    if not policy.origins:
        return

    @web.middleware
    async def preflight(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin", "")
        if not policy.allows(origin):
            return web.json_response(
                {"error": "cors", "message": f"origin {origin!r} may not call this API"}, status=403
            )
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": policy.allow_origin(origin),
                "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE),
                "Vary": "Origin",
            },
        )

    async def mark(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not policy.allows(origin) or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = policy.allow_origin(origin)
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        response.headers.add("Vary", "Origin")

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(mark)
