"""The service's ``/docs`` page: its OpenAPI document as one self-contained HTML page.

FastAPI's Swagger and ReDoc pages load their scripts and styles from a public CDN, so every
reader's browser would tell that CDN it is looking at the service, and a compromised CDN
could run script with the reader's token in reach. This page is rendered on the server from
the OpenAPI document: no script, nothing fetched from anywhere (its Content-Security-Policy
forbids it). Clients that want an interactive UI can load ``/openapi.json`` into their own.
"""

from __future__ import annotations

from html import escape
from typing import Any

# Nothing may load from anywhere; only the page's own inline style applies.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "code,pre{background:#f3f3f3;padding:0 .2rem}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}"
    "h3{margin-top:2rem}.method{font-family:monospace;font-weight:bold}"
)


def docs_page(openapi: dict[str, Any]) -> str:
    """HTML for ``openapi``: each route with its summary, authentication, body fields and answers."""
    info = openapi.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(info.get('title', 'API'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} <small>{escape(str(info.get('version', '')))}</small></h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        "<p>The machine-readable description is <a href='/openapi.json'><code>/openapi.json</code></a>.</p>",
    ]
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(_operation(path, method, operation))
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    secured = bool(operation.get("security"))
    lines = [
        f"<h3><span class='method'>{escape(method.upper())}</span> <code>{escape(path)}</code></h3>",
        f"<p>{escape(operation.get('description') or operation.get('summary', ''))}</p>",
        "<p>" + ("Needs <code>Authorization: Bearer &lt;token&gt;</code>." if secured else "No token needed.") + "</p>",
    ]
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("properties"):
        required = set(schema.get("required", []))
        rows = "".join(
            f"<tr><td><code>{escape(name)}</code>{' (required)' if name in required else ''}</td>"
            f"<td>{escape(_type(field))}</td><td>{escape(str(field.get('default', '')))}</td>"
            f"<td>{escape(field.get('description', ''))}</td></tr>"
            for name, field in schema["properties"].items()
        )
        lines.append(f"<table><tr><th>body field</th><th>type</th><th>default</th><th>meaning</th></tr>{rows}</table>")
    answers = "".join(
        f"<li><code>{escape(str(code))}</code> {escape(answer.get('description', ''))}</li>"
        for code, answer in operation.get("responses", {}).items()
    )
    lines.append(f"<ul>{answers}</ul>")
    return "\n".join(lines)


def _type(field: dict[str, Any]) -> str:
    if "enum" in field:
        return " | ".join(map(str, field["enum"]))
    if field.get("type") == "array":
        return f"list of {field.get('items', {}).get('type', 'values')}"
    bounds = [f"{key} {field[key]}" for key in ("minimum", "maximum") if key in field]
    return " ".join([str(field.get("type", "any")), *bounds]).strip()
