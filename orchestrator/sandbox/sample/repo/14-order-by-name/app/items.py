"""The item list query.

``fetch`` selects ``item.*``, so the rows carry whatever columns the schema
has right now: columns added by a newer patch appear, columns this code does
not know about are ignored by ``render``. That is how this code keeps working
before and after the patches near it.
"""

LIMIT = 100


def fetch(cur, query):
    """Return ``{"rows": [dict, ...], "q": str}`` for the item page.

    ``query`` is the parsed query string; ``?q=TEXT`` keeps the items whose
    name contains TEXT (case-insensitive).
    """
    q = query.get("q", [""])[0].strip()
    cur.execute(
        "SELECT item.*, person.displayname AS owner_name"
        " FROM item LEFT JOIN person ON person.id = item.owner"
        " WHERE item.name ILIKE %s"
        " ORDER BY item.name, item.id LIMIT %s",
        (f"%{like_escape(q)}%", LIMIT),
    )
    names = [column.name for column in cur.description]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    if "tag_id" in names:
        add_tags(cur, rows)
    return {"rows": rows, "q": q}


def like_escape(text):
    """``text`` with the LIKE wildcards escaped, to match it literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def add_tags(cur, rows):
    """Set ``row["tag"]`` to the name of the row's tag (item.tag_id implies the tag table)."""
    ids = sorted({row["tag_id"] for row in rows if row["tag_id"] is not None})
    names = {}
    if ids:
        cur.execute("SELECT id, name FROM tag WHERE id = ANY(%s)", (ids,))
        names = dict(cur.fetchall())
    for row in rows:
        row["tag"] = names.get(row["tag_id"])
