"""`GET /api/docs` and `GET /api/openapi.json`: the HTTP API's OpenAPI document (openapi.py).

`/api/docs` answers a browser (`Accept: text/html`) with a plain page of every route, its
parameters, body and answers, made here from the document (nothing is loaded from elsewhere,
so it works offline); anything else gets the JSON, as `/api/openapi.json` always does. Both are
served without the API key: a browser cannot send one to open a page, and the document is the
same for every server (no model, voice or key in it).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from aiohttp import web

from .openapi import openapi_document

PATHS = ("/api/docs", "/api/openapi.json")
METHODS = ("get", "post", "put", "delete")
_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "h2{font-size:1.05rem;margin:1.6rem 0 .3rem;font-family:monospace}"
    ".get{color:#1565c0}.post{color:#2e7d32}.delete{color:#c62828}"
    "table{border-collapse:collapse;margin:.3rem 0}td,th{border:1px solid #ccc;padding:.15rem .5rem;"
    "text-align:left;vertical-align:top}code{font-size:.9em}"
)


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        values = [str(value) for value in schema["enum"]]
        return "one of " + ", ".join(values[:12]) + (f" … ({len(values)})" if len(values) > 12 else "")
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "minimum" in schema or "maximum" in schema:
        text += f" {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    return text


def _operation_html(path: str, method: str, operation: dict[str, Any]) -> str:
    parts = [f'<h2><span class="{method}">{method.upper()}</span> {escape(path)}</h2>']
    parts.append(f"<p>{escape(operation.get('summary', ''))}")
    if operation.get("security") == []:
        parts.append(" <em>(no key needed)</em>")
    parts.append("</p>")
    if "description" in operation:
        parts.append(f"<p>{escape(operation['description'])}</p>")
    parameters = operation.get("parameters", [])
    if parameters:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code>{' *' if p.get('required') else ''}</td>"
            f"<td>{escape(p['in'])}</td><td>{escape(_schema_text(p.get('schema', {})))}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
            for p in parameters
        )
        parts.append(f"<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>{rows}</table>")
    body = operation.get("requestBody")
    if body:
        for media_type, content in body["content"].items():
            schema = content.get("schema", {})
            fields = ", ".join(schema.get("properties", {})) or _schema_text(schema)
            parts.append(f"<p>body <code>{escape(media_type)}</code>: {escape(fields)}</p>")
    answers = []
    for status, response in operation["responses"].items():
        kinds = ", ".join(response.get("content", {})) or ("JSON error" if "$ref" in response else "")
        answers.append(f"<code>{escape(status)}</code> {escape(kinds)}")
    parts.append(f"<p>answers: {'; '.join(answers)}</p>")
    return "".join(parts)


def docs_page(document: dict[str, Any]) -> str:
    info = document["info"]
    operations = [
        _operation_html(path, method, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(info['title'])}</title>"
        f"<style>{_STYLE}</style><h1>{escape(info['title'])} {escape(info['version'])}</h1>"
        f"<p>{escape(info['description'])}</p>"
        '<p>As OpenAPI 3.1 JSON: <a href="/api/openapi.json">/api/openapi.json</a>. '
        'Errors are JSON, <code>{"error", "message"}</code> (the <code>Error</code> schema).</p>'
        f"{''.join(operations)}</html>"
    )


class DocsRoutes:
    def __init__(self) -> None:
        document = openapi_document()
        self._json = json.dumps(document, indent=1).encode()
        self._html = docs_page(document)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/api/docs", self.docs)
        app.router.add_get("/api/openapi.json", self.openapi)

    async def docs(self, request: web.Request) -> web.Response:
        if "text/html" in request.headers.get("Accept", ""):
            return web.Response(text=self._html, content_type="text/html")
        return await self.openapi(request)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._json, content_type="application/json")
