"""One self-contained HTML page (images embedded as base64) from a list of blocks."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence


def html_page(title: str, blocks: Sequence[tuple]) -> str:
    """One self-contained HTML page from blocks: ("h2", text), ("p", text), ("pre", text),
    ("img", png_bytes, caption) and ("table", header_row, rows)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
           "img{max-width:100%}pre{background:#f5f5f5;padding:8px;overflow-x:auto}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h2", "p", "pre"):
            out.append(f"<{kind}>{html.escape(str(block[1]))}</{kind}>")
        elif kind == "img":
            b64 = base64.b64encode(block[1]).decode("ascii")
            cap = html.escape(block[2] if len(block) > 2 else "")
            out.append(f"<figure><img alt='{cap}' src='data:image/png;base64,{b64}'><figcaption>{cap}"
                       "</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out.append("</body></html>")
    return "\n".join(out)
