"""Globs: * and ? within a directory, ** across directories."""

from __future__ import annotations

import pytest

from orchestrator.history.globs import matches


@pytest.mark.parametrize(("path", "pattern", "expected"), [
    ("database/schema/patch-2200-01-0.sql", "database/schema/patch-*.sql", True),
    ("database/schema/old/patch-2200-01-0.sql", "database/schema/patch-*.sql", False),
    ("database/schema/patch-2200-01-0.sql.orig", "database/schema/patch-*.sql", False),
    ("database/schema/comments.sql", "database/schema/**", True),
    ("database/schema/a/b/c.sql", "database/schema/**", True),
    ("database/schemas/x.sql", "database/schema/**", False),
    ("lib/db/patch-1.sql", "**/patch-*.sql", True),
    ("patch-1.sql", "**/patch-*.sql", True),
    ("database/schema/patch-1.sql", "database/schema/patch-?.sql", True),
    ("database/schema/patch-12.sql", "database/schema/patch-?.sql", False),
    ("a.c", "[ab].c", True),
    ("c.c", "[!ab].c", True),
    ("a+b.sql", "a+b.sql", True),
])
def test_glob_matching(path: str, pattern: str, expected: bool) -> None:
    """Each path matches its glob exactly as git users expect."""
    assert matches(path, pattern) is expected
