"""Small, safe HTML building blocks for the run report: escaped text, tables, embedded figures.

The report is read by a release board, often offline and from inside a signed bundle, so it is
one file with nothing to fetch: inline CSS, PNGs as base64 data URIs, no script. A
Content-Security-Policy forbids any other source, so a stray external reference would show up as
a blocked request (and a console error in the browser test) instead of a silent leak of who
opened the report. Every string from a run directory is escaped: site names, reasons and
policy names come from files a coordinator did not write.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5rem 3rem; color: #1d2125; line-height: 1.45; }
h1 { margin-top: 1.5rem; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } td:first-child { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { padding: 1rem 1.2rem; border-radius: 6px; font-size: 1.25rem; font-weight: 600; margin: 1rem 0; }
.pass { background: #dafbe1; border: 2px solid #1a7f37; } .fail { background: #ffebe9; border: 2px solid #cf222e; }
.forced, .inconclusive { background: #fff8c5; border: 2px solid #9a6700; }
.none { background: #eaeef2; border: 2px solid #57606a; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
.unsure { color: #9a6700; font-weight: 600; }
.note { background: #f6f8fa; border-left: 4px solid #57606a; padding: .5rem .8rem; margin: .6rem 0; }
.warn { background: #fff8c5; border-left: 4px solid #9a6700; padding: .5rem .8rem; margin: .6rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .85rem; color: #57606a; } code { background: #f3f5f7; padding: 0 .2rem; }
.meta { color: #57606a; font-size: .9rem; }
.gloss { color: #57606a; font-size: .82rem; white-space: normal; max-width: 24rem; }
"""


class Html(str):
    """Markup already built from escaped parts: inserted as is."""


def escape(value: object) -> Html:
    """Any value as text for HTML (Html passes through: it is escaped already)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def join(parts: Iterable[str]) -> Html:
    return Html("".join(escape(part) for part in parts))


def tag(name: str, content: object = "", **attributes: object) -> Html:
    """``<name attr="...">content</name>``; attribute values and text content are escaped.

    A trailing underscore is dropped from attribute names (``class_`` -> ``class``).
    """
    attrs = "".join(f' {key.rstrip("_")}="{escape(value)}"' for key, value in attributes.items())
    return Html(f"<{name}{attrs}>{escape(content)}</{name}>")


def number(value: object, digits: int = 3) -> str:
    """A measured value as a board reads it: None is 'n/a', floats to ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def interval(values: Sequence[float] | None, digits: int = 3) -> str:
    return "n/a" if not values else f"[{number(values[0], digits)}, {number(values[1], digits)}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> Html:
    """A table; cells are escaped unless already Html; columns in ``numeric`` are right-aligned."""
    head = tag("tr", join(tag("th", header) for header in headers))
    body = [
        tag(
            "tr", join(tag("td", cell, class_="num") if i in numeric else tag("td", cell) for i, cell in enumerate(row))
        )
        for row in rows
    ]
    return tag("table", join([tag("thead", head), tag("tbody", join(body))]))


def note(text: object, kind: str = "note") -> Html:
    return tag("div", text, class_=kind)


def figure(path: Path, caption: str) -> Html:
    """A PNG embedded as a data URI, with its caption as alt text and figure caption."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    image = Html(f'<img src="data:image/png;base64,{encoded}" alt="{escape(caption)}">')
    return tag("figure", join([image, tag("figcaption", caption)]))


def section(title: str, *content: object, id_: str | None = None) -> Html:
    attributes = {"id": id_} if id_ else {}
    return tag("section", join([tag("h2", title), *(escape(c) for c in content)]), **attributes)


def page(title: str, body: Iterable[object]) -> str:
    """The whole document: UTF-8, a viewport, the CSP, inline CSS and the body."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request (the CSP would refuse it loudly)
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(escape(part) for part in body)
        + "\n</body>\n</html>\n"
    )
