"""GET /docs: the server's OpenAPI schema as one self-contained HTML page (no scripts, styles or fonts fetched
from anywhere, so it reads the same offline)."""

from __future__ import annotations

from html import escape

_STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
          "code,td{font-family:ui-monospace,monospace;font-size:13px}"
          "table{border-collapse:collapse;margin:.5em 0 1.5em}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}h2{margin-top:1.5em}")


def _type(schema: dict) -> str:
    """A short type name of a JSON schema: 'integer', 'string | array of string', 'ChatMessage'."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    return str(schema.get("type", "any"))


def _bounds(schema: dict) -> str:
    names = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<", "minItems": "items >="}
    return ", ".join(f"{sign} {schema[key]}" for key, sign in names.items() if key in schema)


def _fields(name: str, components: dict) -> str:
    schema = components.get(name, {})
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td>{escape(field)}{' (required)' if field in required else ''}</td><td>{escape(_type(prop))}</td>"
        f"<td>{escape(repr(prop['default'])) if 'default' in prop else ''}</td><td>{escape(_bounds(prop))}</td></tr>"
        for field, prop in schema.get("properties", {}).items())
    return f"<table><tr><th>{escape(name)}</th><th>type</th><th>default</th><th>bounds</th></tr>{rows}</table>"


def docs_page(openapi: dict, model: str) -> str:
    """HTML listing every route of `openapi` with its summary and the fields of its JSON body."""
    components = openapi.get("components", {}).get("schemas", {})
    parts = [f"<!doctype html><meta charset=utf-8><title>{escape(openapi['info']['title'])}</title>"
             f"<style>{_STYLE}</style><h1>{escape(openapi['info']['title'])} {escape(openapi['info']['version'])}</h1>"
             f"<p>Serving model <code>{escape(model)}</code>. OpenAI-compatible: point any OpenAI client at "
             f"<code>/v1</code>. Machine-readable schema: <code>/v1/openapi.json</code>.</p>"]
    for path, methods in openapi.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2>")
            if op.get("description") or op.get("summary"):
                parts.append(f"<p>{escape(op.get('description') or op.get('summary'))}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                parts.append(_fields(_type(body), components))
    seen = {_type(op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}))
            for methods in openapi.get("paths", {}).values() for op in methods.values()}
    nested = [n for n in ("ChatMessage", "TextPart") if n in components and n not in seen]
    parts += [f"<h2>{n}</h2>{_fields(n, components)}" for n in nested]
    return "".join(parts)
