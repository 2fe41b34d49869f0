"""Reading rendered pages in tests: a KPI tile's text, a table's cells, an embedded Plotly figure."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any


def figure(html: str, div_id: str) -> dict[str, Any]:
    """The Plotly figure (data, layout) a page embeds for the chart <div id=div_id>."""
    assert f'<div id="{div_id}"' in html, f"no #{div_id} on the page"
    marker = f'<script type="application/json" id="{div_id}-figure">'
    start = html.index(marker) + len(marker)
    return json.loads(html[start : html.index("</script>", start)])  # type: ignore[no-any-return]


def tile(html: str, kpi: str) -> dict[str, str]:
    """The label, value and note texts of the tile `data-kpi=kpi`."""
    match = re.search(rf'data-kpi="{kpi}">(.*?)(?=data-kpi=|</section>)', html, re.S)
    assert match, f"no tile {kpi!r} on the page"
    parts = {}
    for part in ("label", "value", "note"):
        found = re.search(rf'<div class="{part}"[^>]*>(.*?)</div>', match.group(1), re.S)
        parts[part] = _text(found.group(1)) if found else ""
    return parts


def table(html: str, table_id: str) -> list[list[str]]:
    """Rows of cell texts of <table id=table_id> (header, body and footer rows alike)."""
    parser = _TableParser(table_id)
    parser.feed(html)
    assert parser.found, f"no table #{table_id} on the page"
    return parser.rows


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split()).replace("&amp;", "&")


class _TableParser(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.found = False
        self.depth = 0
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", self.table_id) in attrs:
            self.found, self.depth = True, 1
        elif self.depth and tag == "table":
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None and tag == "br":
            self.cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "table":
            self.depth -= 1
        elif self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
