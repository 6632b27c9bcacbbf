"""rollback's refusals, against a real git history: each names why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import BadInput, Refused
from orchestrator.runner.rollback import _previous, check


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name)
    subprocess.run(["git", "-C", str(repo), "add", name], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e",
                    "commit", "-qm", name], check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def history(tmp_path: Path) -> tuple[str, list[str], str]:
    """A line a < b < c < d, and a side commit s off b."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "db-stable", str(repo)], check=True)
    line = [commit(repo, n) for n in ("a", "b")]
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-b", "side"], check=True)
    side = commit(repo, "s")
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "db-stable"], check=True)
    line += [commit(repo, n) for n in ("c", "d")]
    return str(repo), line, side


def kept(*shas: str) -> dict[str, list[str]]:
    return {"app1": list(shas), "app2": list(shas)}


def test_back_to_a_kept_ancestor_no_older_than_the_window(history: tuple[str, list[str], str]
                                                          ) -> None:
    repo, (a, b, c, d), _ = history
    check(repo, d, c, ("run-1", b), kept(d, c, b))
    check(repo, d, b, ("run-1", b), kept(d, c, b))  # the release before the window itself
    check(repo, d, b, None, kept(d, c, b))


def test_each_refusal_names_its_reason(history: tuple[str, list[str], str]) -> None:
    repo, (a, b, c, d), side = history
    with pytest.raises(BadInput, match="nothing to roll back"):
        check(repo, d, d, None, kept(d))
    with pytest.raises(Refused, match="not an ancestor"):
        check(repo, c, d, None, kept(d, c))
    with pytest.raises(Refused, match="not an ancestor"):
        check(repo, d, side, None, kept(d, side))
    with pytest.raises(Refused, match=f"served just before the last window \\(run run-7\\).*"
                                      f"no further than {b[:12]}"):
        check(repo, d, a, ("run-7", b), kept(d, c, b, a))
    with pytest.raises(Refused, match="no longer kept on app2"):
        check(repo, d, c, None, {"app1": [d, c], "app2": [d]})


def test_the_default_is_the_newest_release_every_host_keeps() -> None:
    assert _previous({"app1": ["d", "c", "b"], "app2": ["d", "b", "c"]}, "d") == "c"
    assert _previous({"app1": ["d", "c", "b"], "app2": ["d", "b"]}, "d") == "b"
    with pytest.raises(Refused, match="nothing to roll back to"):
        _previous({"app1": ["d", "c"], "app2": ["d"]}, "d")
