"""The analysis report on disk: ``analysis.md`` (relative picture links), ``analysis.json`` and ``analysis.html``.

Each :class:`Part` is one numbered section: Markdown text, pictures (caption -> PNG path) and a JSON-ready
``data`` dict. The HTML page is rendered from the same Markdown by a converter for exactly the subset written
here (headings, paragraphs, tables, images, ``code`` and **bold**), so the two never disagree. Every file is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from facegen.io import atomic_path


@dataclass
class Part:
    """key: JSON name; title: heading; markdown: body; pictures: caption -> path; data: numbers for JSON."""

    key: str
    title: str
    markdown: str = ""
    pictures: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def _write(path: str, text: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_markdown(title: str, header: dict[str, str], parts: list[Part], out: str) -> str:
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in header.items()]
    for number, part in enumerate(parts, 1):
        lines += ["", f"## {number}. {part.title}", "", part.markdown.rstrip(), ""]
        for caption, path in part.pictures.items():
            lines += [f"**{caption}**", "", f"![{caption}]({os.path.relpath(path, out)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def markdown_to_html(markdown: str, title: str) -> str:
    """HTML for the Markdown subset :func:`report_markdown` writes."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table]
            head, rest = rows[0], [r for r in rows[1:] if not all(set(c) <= set(":-") for c in r)]
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if image:
            body.append(f'<img alt="{html.escape(image[1])}" src="{html.escape(image[2])}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_analysis(title: str, header: dict[str, str], parts: list[Part], out: str,
                   extra: dict[str, Any] | None = None, name: str = "analysis") -> dict[str, str]:
    """Write ``out/<name>.{md,json,html}`` (``analysis.*`` by default); returns their paths by format."""
    os.makedirs(out, exist_ok=True)
    markdown = report_markdown(title, header, parts, out)
    body = {**(extra or {}), "header": header,
            "sections": {p.key: {"title": p.title, **p.data,
                                 "pictures": {c: os.path.relpath(path, out) for c, path in p.pictures.items()}}
                         for p in parts}}
    return {"md": _write(f"{out}/{name}.md", markdown),
            "json": _write(f"{out}/{name}.json", json.dumps(_clean(body), indent=2) + "\n"),
            "html": _write(f"{out}/{name}.html", markdown_to_html(markdown, title))}
