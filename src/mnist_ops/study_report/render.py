"""One report, two renderings: the same list of blocks becomes report.md and index.html."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    file: str
    caption: str


# ("heading", str) | ("paragraph", str) | ("list", list[str]) | ("table", Table) | ("image", Image)
Block = tuple[str, object]


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for kind, content in blocks:
        if kind == "heading":
            parts.append(("# " if not parts else "## ") + content)
        elif kind == "paragraph":
            parts.append(content)
        elif kind == "list":
            parts.append("\n".join(f"- {line}" for line in content))
        elif kind == "table":
            lines = [content.header, ["---"] * len(content.header), *content.rows]
            parts.append("\n".join("| " + " | ".join(line) + " |" for line in lines))
        elif kind == "image":
            parts.append(f"![{content.caption}]({content.file})")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    return "\n\n".join(parts) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))


STYLE = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
         "img{max-width:100%}")


def render_html(blocks: list[Block]) -> str:
    parts = []
    for kind, content in blocks:
        if kind == "heading":
            tag = "h1" if not parts else "h2"
            parts.append(f"<{tag}>{_html_inline(content)}</{tag}>")
        elif kind == "paragraph":
            parts.append(f"<p>{_html_inline(content)}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_html_inline(line)}</li>" for line in content) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_html_inline(cell)}</th>" for cell in content.header)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(cell)}</td>" for cell in row) + "</tr>"
                           for row in content.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            parts.append(f'<figure><img src="{html.escape(content.file)}" alt="{html.escape(content.caption)}">'
                         f"<figcaption>{_html_inline(content.caption)}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    title = next((content for kind, content in blocks if kind == "heading"), "mnist-ops study")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
