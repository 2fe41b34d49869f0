"""Reading what a page shows: a table's rows (cell text and links), an element's text, by id."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Row:
    cells: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)


class _Tables(HTMLParser):
    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.depth = 0  # nesting of <table> inside the one wanted
        self.section = ""
        self.rows: list[Row] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table" and (self.depth or values.get("id") == self.table_id):
            self.depth += 1
        if not self.depth:
            return
        if tag in ("thead", "tbody", "tfoot"):
            self.section = tag
        elif tag == "tr" and self.section == "tbody":
            self.rows.append(Row(attrs=values))
        elif tag in ("td", "th") and self.section == "tbody":
            self.cell = []
        elif tag == "a" and self.section == "tbody" and self.rows:
            self.rows[-1].links.append(values.get("href", ""))

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].cells.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "table":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_rows(html: str, table_id: str) -> list[Row]:
    """The body rows of `<table id=table_id>`: each cell's text (whitespace folded) and the links in it."""
    parser = _Tables(table_id)
    parser.feed(html)
    return parser.rows


VOID = frozenset({"area", "br", "col", "hr", "img", "input", "link", "meta", "source", "wbr"})


class _Text(HTMLParser):
    def __init__(self, attribute: str, value: str) -> None:
        super().__init__()
        self.attribute, self.value = attribute, value
        self.depth = 0
        self.found: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += tag not in VOID
        elif dict(attrs).get(self.attribute) == self.value:
            self.depth = 1
            self.found.append([])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <br/>: opens nothing

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.found[-1].append(data)


def text_of(html: str, attribute: str, value: str) -> str | None:
    """The text inside the first element whose `attribute` is `value` (whitespace folded), else None."""
    parser = _Text(attribute, value)
    parser.feed(html)
    if not parser.found:
        return None
    return " ".join("".join(parser.found[0]).split())
