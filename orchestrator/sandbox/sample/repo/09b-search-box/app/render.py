"""HTML for the item page."""

import html

import columns

STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ccc; text-align: left; }
"""


def table(rows):
    """The rows as an HTML table of the ``columns.SHOWN`` columns they have."""
    present = set(rows[0]) if rows else set()
    shown = [column for column in columns.SHOWN if column[0] in present]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in shown)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(fmt(row[key]))}</td>" for key, _, fmt in shown)
        + "</tr>\n"
        for row in rows
    )
    return f"<table><tr>{head}</tr>\n{body}</table>\n"


def page(listing):
    """Return the item page for ``listing`` (see ``items.fetch``) as UTF-8 bytes."""
    heading = f"Items ({len(listing['rows'])})"
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>Items</title>"
        f"<style>{STYLE}</style></head>\n"
        f"<body><h1>{heading}</h1>\n{search_box(listing.get('q', ''))}"
        f"{table(listing['rows'])}</body></html>\n"
    ).encode()


def search_box(q):
    """A form that reloads the page with ``?q=``, showing the current search."""
    return (
        "<form method='get' action='/'>"
        f"<input type='search' name='q' value='{html.escape(q, quote=True)}'>"
        " <button>Search</button></form>\n"
    )
