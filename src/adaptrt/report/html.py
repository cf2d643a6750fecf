"""A small, self-contained HTML report: sections of text, tables and figures (PNG embedded as base64).

The study modules add sections; :class:`adaptrt.report.RunFolder` renders the report as ``report.html``.
Nothing is fetched from the network when the report is opened: styles are inline, images are data URIs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "Section", "format_value"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{border-bottom:2px solid #3b6ea5;padding-bottom:.2em}h2{color:#3b6ea5;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:right}th{background:#eef2f8}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #dde}
figcaption{font-size:.9em;color:#444}.meta{color:#555;font-size:.9em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def format_value(v: Any) -> str:
    """Format a table cell: floats with 4 significant digits, None as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass
class Section:
    """One section of a report: a title and blocks of HTML (already escaped/assembled)."""

    title: str
    blocks: list[str] = field(default_factory=list)

    def text(self, text: str) -> Section:
        """Add a paragraph of plain text (escaped; blank lines split paragraphs)."""
        for para in text.strip().split("\n\n"):
            self.blocks.append(f"<p>{html.escape(para)}</p>")
        return self

    def note(self, text: str) -> Section:
        """Add a highlighted note (warnings, exclusions, caveats)."""
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')
        return self

    def preformatted(self, text: str) -> Section:
        self.blocks.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], *, caption: str | None = None) -> Section:
        """Add a table; columns are the union of the rows' keys in first-seen order."""
        if not rows:
            self.blocks.append("<p><em>(no rows)</em></p>")
            return self
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c in cols) + "</tr>"
            for r in rows
        )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, png: bytes, *, caption: str = "", alt: str = "") -> Section:
        """Add a PNG figure, embedded as a data URI."""
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(
            f'<figure><img alt="{html.escape(alt or caption)}" src="data:image/png;base64,{data}"/>{cap}</figure>'
        )
        return self


@dataclass
class Report:
    """An HTML report made of :class:`Section` objects."""

    title: str
    meta: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        """Append and return a new section."""
        s = Section(title)
        self.sections.append(s)
        return s

    def render(self) -> str:
        """The whole report as one HTML string."""
        meta = "".join(f"<div><b>{html.escape(k)}</b>: {html.escape(v)}</div>" for k, v in self.meta.items())
        toc = "".join(
            f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(self.sections)
        )
        body = "".join(
            f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
            for i, s in enumerate(self.sections)
        )
        made = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><div class='meta'>{meta}<div>written {made}</div></div>"
            f"<ol>{toc}</ol>{body}</body></html>"
        )
