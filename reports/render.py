"""Markdown and HTML from one list of blocks, so the two reports say the same thing.

A block is a tuple: ``("h", level, text)``, ``("p", text)``, ``("ul", [text, ...])``,
``("table", header, rows)``, ``("img", relative path, alt)``, ``("pre", text)``. Text may use
``**bold**`` and ```code``` (rendered as such in HTML). The HTML embeds every image as a
``data:`` URI (one self-contained file that opens offline) and checks, once loaded, that
every ``<img>`` decoded: ``<html data-image-check="OK">`` or ``"BROKEN n"``
(``scripts/check_report_browser.sh`` reads it).
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["to_markdown", "to_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:2em auto;
max-width:1180px;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;border:1px solid #e3e3e3}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
"""

_CHECK = """
window.addEventListener('load', function () {
  var imgs = document.images, bad = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { bad++; }
  }
  document.documentElement.setAttribute('data-images', String(imgs.length));
  document.documentElement.setAttribute('data-image-check', bad ? 'BROKEN ' + bad : 'OK');
});
"""


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(b[1])
        elif kind == "ul":
            out.append("\n".join(f"- {t}" for t in b[1]))
        elif kind == "table":
            header, rows = b[1], b[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                     "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "pre":
            out.append("```" + (b[2] if len(b) > 2 else "") + "\n" + b[1].rstrip("\n") + "\n```")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    s = html.escape(str(text), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    return s


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_html(blocks, title: str, base: Path) -> str:
    """Self-contained HTML; image paths are read relative to ``base`` and embedded."""
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            body.append(f'<h{b[1]} id="{_anchor(b[2])}">{_inline(b[2])}</h{b[1]}>')
        elif kind == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((base / b[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                        f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(b[1])}</pre>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n"
            f"<style>{_CSS}</style>\n<script>{_CHECK}</script>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
