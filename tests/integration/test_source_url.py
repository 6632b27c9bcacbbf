"""``[source] repo`` as a URL on the real sandbox: the orchestrator fetches a mirror of it
and plans and dry-runs a deploy of the sandbox from what it fetched.

The URL is a ``file://`` clone of the sandbox's repository (no network leaves the
machine); a revision pushed to it after the first fetch is planned on the next run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sandbox.component import Context
from orchestrator.sandbox.configfile import render_config
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.e2e.conftest import approvals
from tests.gitrepo import GitRepo

pytestmark = pytest.mark.integration


def configured(sandbox: Context, tmp_path: Path, url: str) -> Path:
    """The sandbox's config with ``[source] repo`` a URL and the mirror under ``tmp_path``."""
    lines = []
    for line in render_config(sandbox.layout).splitlines():
        if line.startswith("repo = "):
            line = f'repo = "{url}"\ncache_dir = "{tmp_path / "cache"}"'
        lines.append(line)
    path = tmp_path / "sandbox.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fdt(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *args],
                          capture_output=True, text=True, check=False, cwd=PROJECT_ROOT,
                          timeout=120)


def test_a_url_is_fetched_planned_and_dry_run(sandbox: Context, tmp_path: Path) -> None:
    upstream = GitRepo(tmp_path / "upstream", clone_of=str(sandbox.layout.repo))
    config = configured(sandbox, tmp_path, f"file://{upstream.path}")
    first = fdt(config, "plan", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    plan = json.loads(first.stdout)
    assert plan["to"] == upstream.git("rev-parse", "db-stable")
    source = plan["source"]
    assert source["repo"] == f"file://{upstream.path}" and source["fetched"]
    assert Path(source["path"]).is_relative_to(tmp_path / "cache")
    # a revision pushed after the first fetch: the next run fetches and plans it
    tip = upstream.commit("A code-only change upstream", {"README.upstream": "new\n"})
    again = json.loads(fdt(config, "plan", "--json").stdout)
    assert again["to"] == tip and again["source"]["tip"] == tip
    assert again["source"]["fetched"] > source["fetched"]
    newest = again["revisions"][-1]
    assert (newest["sha"], newest["kind"]) == (tip, "code")
    dry = fdt(config, "deploy", "--dry-run", "--yes", *approvals())
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
