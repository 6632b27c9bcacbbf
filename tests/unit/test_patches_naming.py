"""Patch file names: the pattern, numeric order, bad names and duplicates (SPEC section 2)."""

from __future__ import annotations

import pytest

from orchestrator.errors import BadInput, ExitCode
from orchestrator.patches import NAME_RE, PatchName, PatchNameError, check_unique, parse_name


def test_valid_name_gives_numbers_and_basename() -> None:
    """A conforming path yields its three numbers and its basename."""
    name = parse_name("database/schema/patch-2211-43-0.sql")
    assert (name.major, name.minor, name.point) == (2211, 43, 0)
    assert name.key == (2211, 43, 0)
    assert name.filename == "patch-2211-43-0.sql"


def test_leading_zeros_are_numbers() -> None:
    """``patch-2200-01-0.sql`` is minor 1: the numbers are integers, not strings."""
    assert parse_name("patch-2200-01-0.sql").key == (2200, 1, 0)


def test_order_is_numeric_not_lexical() -> None:
    """patch-2200-9-0 sorts before patch-2200-10-0, and major before minor before point."""
    files = [
        "patch-2200-10-0.sql",
        "patch-2201-0-0.sql",
        "patch-2200-9-0.sql",
        "patch-2200-9-1.sql",
        "patch-999-99-99.sql",
    ]
    ordered = [n.filename for n in sorted(parse_name(f) for f in files)]
    assert ordered == [
        "patch-999-99-99.sql",
        "patch-2200-9-0.sql",
        "patch-2200-9-1.sql",
        "patch-2200-10-0.sql",
        "patch-2201-0-0.sql",
    ]


def test_filename_does_not_take_part_in_comparison() -> None:
    """Two spellings of the same numbers compare equal: order and equality use the numbers."""
    assert parse_name("patch-2200-01-0.sql") == parse_name("patch-2200-1-0.sql")
    assert PatchName(1, 2, 3, "a") == PatchName(1, 2, 3, "b")


@pytest.mark.parametrize(
    "path",
    [
        "database/schema/patch-foo.sql",
        "patch-2200-1.sql",
        "patch-2200-1-0.SQL",
        "patch-2200-1-0.sql.orig",
        "xpatch-2200-1-0.sql",
        "patch-2200-1-0-1.sql",
        "patch--1-0-0.sql",
        "database/schema/patch-2200-1-0.sql/",
    ],
)
def test_bad_name_raises_naming_the_file(path: str) -> None:
    """A name that does not fullmatch the pattern is bad input naming the file as given."""
    with pytest.raises(PatchNameError) as caught:
        parse_name(path)
    assert str(caught.value) == f"{path}: name does not match patch-MAJOR-MINOR-POINT.sql"
    assert caught.value.paths == (path,)
    assert isinstance(caught.value, BadInput) and caught.value.exit_code == ExitCode.BAD_INPUT


def test_pattern_is_matched_against_the_basename_only() -> None:
    """The directory may contain anything, even something that looks like a patch."""
    assert parse_name("patch-1-1-1.sql.d/patch-2-2-2.sql").key == (2, 2, 2)
    assert NAME_RE.fullmatch("patch-2211-43-0.sql")


def test_duplicate_numbers_raise_naming_both_files() -> None:
    """patch-2200-01-0.sql and patch-2200-1-0.sql are the same patch: both are named."""
    names = [parse_name(f) for f in ("patch-2200-01-0.sql", "patch-2200-2-0.sql")]
    names.append(parse_name("other/patch-2200-1-0.sql"))
    with pytest.raises(PatchNameError) as caught:
        check_unique(names)
    message = str(caught.value)
    assert "patch-2200-01-0.sql" in message and "patch-2200-1-0.sql" in message
    assert caught.value.paths == ("patch-2200-01-0.sql", "patch-2200-1-0.sql")


def test_unique_names_pass_and_the_same_file_twice_is_not_a_duplicate() -> None:
    """Distinct numbers pass; one file listed twice (same basename) is one patch."""
    names = [parse_name(f) for f in ("patch-1-0-0.sql", "patch-1-0-1.sql", "a/patch-1-0-0.sql")]
    check_unique(names)
    check_unique([])
