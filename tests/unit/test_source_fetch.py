"""``[source] repo`` as a URL (a mirror under the cache directory) and ``[source] fetch``
(a local repository's remote), on real git: bare repositories stand for the remotes."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.config import load_config
from orchestrator.errors import BadInput, ConfigError, ExitCode
from orchestrator.history import git
from orchestrator.history.checkout import (
    cache_name,
    cache_root,
    checkout,
    is_url,
    masked,
    mirror_path,
)
from orchestrator.runner.planning import checked_out
from tests.fakes import FakeClock
from tests.gitrepo import COLD_SQL, GitRepo, patch


@pytest.fixture
def work(tmp_path: Path) -> GitRepo:
    """Where the application is developed: a cold patch, then code."""
    repo = GitRepo(tmp_path / "work")
    repo.commit("Initial", {"app/main.py": "v0\n", "database/schema/security.sql": "-- p\n"})
    repo.commit("Cold", {patch(2200, 1): COLD_SQL.format(n=1)})
    repo.commit("Code", {"app/main.py": "v1\n"})
    return repo


@pytest.fixture
def upstream(tmp_path: Path, work: GitRepo) -> Path:
    """The shared repository (bare), as a forge holds it: db-stable and a feature branch."""
    path = tmp_path / "upstream.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work.path), str(path)], check=True,
                   capture_output=True)
    work.git("push", "-q", str(path), "db-stable:feature")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def url_of(path: Path) -> str:
    return f"file://{path}"


def advance(work: GitRepo, upstream: Path, subject: str) -> str:
    """A new commit on db-stable, pushed upstream; its sha."""
    sha = work.commit(subject, {"app/main.py": f"{subject}\n"})
    work.git("push", "-q", str(upstream), "db-stable")
    return sha


def refs(repo: Path) -> dict[str, str]:
    out = git.git(str(repo), "for-each-ref", "--format=%(refname) %(objectname)").stdout
    return {ref: sha for ref, sha in (line.split() for line in out.decode().splitlines())}


# --- URLs and names ---------------------------------------------------------------------


@pytest.mark.parametrize(("repo", "url"), [
    ("https://git.example.com/app.git", True), ("ssh://git@git.example.com/app.git", True),
    ("git@git.example.com:app/app.git", True), ("file:///srv/git/app.git", True),
    ("/srv/git/app", False), ("../app", False), ("app:with-colon", False)])
def test_urls_and_paths_are_told_apart(repo: str, url: bool) -> None:
    """https, ssh, file and scp-like user@host:path are fetched; a path is read in place."""
    assert is_url(repo) is url


def test_a_password_in_a_url_is_never_shown_nor_names_the_mirror(cache: Path) -> None:
    """A token in the URL is masked where it is shown, and the mirror's name does not
    depend on it (a rotated token keeps the mirror)."""
    assert masked("https://ci:s3cret@git.example.com/app.git") == \
        "https://ci:***@git.example.com/app.git"
    assert masked("ssh://git@git.example.com/app.git") == "ssh://git@git.example.com/app.git"
    # a forge's token as the user name, a password holding an @, an upper-case scheme
    assert masked("https://ghp_T0KEN@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert masked("https://ci:p@ss@git.example.com/app.git") == \
        "https://ci:***@git.example.com/app.git"
    assert masked("HTTPS://ci:s3cret@h/app.git") == "HTTPS://ci:***@h/app.git"
    assert mirror_path("https://ci:s3cret@git.example.com/app.git", cache) == \
        mirror_path("https://ci:other@git.example.com/app.git", cache)
    name = cache_name("git@git.example.com:app/app.git")
    assert name.startswith("git.example.com-app-app-") and len(name.rsplit("-", 1)[1]) == 12
    assert cache_name("https://a.example/x.git") != cache_name("https://b.example/x.git")


def test_the_cache_is_the_users_unless_configured(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """Default: $XDG_CACHE_HOME/fastdowntime, else ~/.cache/fastdowntime."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "fastdowntime"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "fastdowntime"
    assert cache_root(str(tmp_path / "mine")) == tmp_path / "mine"


# --- a URL: the mirror --------------------------------------------------------------------


def test_the_first_fetch_makes_the_mirror(upstream: Path, cache: Path, work: GitRepo) -> None:
    """A URL is fetched into a bare mirror under the cache, named for the URL; the tip is
    the upstream branch's, with the time of the fetch."""
    now = FakeClock(1_800_000_000.25)
    found = checkout(url_of(upstream), "db-stable", cache_dir=str(cache), now=now)
    assert found.path == str(mirror_path(url_of(upstream), cache))
    assert Path(found.path).parent == cache / "mirrors"
    assert git.git(found.path, "rev-parse", "--is-bare-repository").stdout.strip() == b"true"
    assert (found.ref, found.tip) == ("refs/heads/db-stable", work.head())
    assert found.fetched == "2027-01-15T08:00:00.250Z"
    assert found.repo == found.remote == url_of(upstream)
    assert set(refs(Path(found.path))) == {"refs/heads/db-stable", "refs/heads/feature"}


def test_a_later_fetch_picks_up_new_commits_and_prunes_branches(
        upstream: Path, cache: Path, work: GitRepo) -> None:
    """The next fetch brings the new commit and drops a branch deleted upstream; the tags
    made in the mirror (the cut tags) stay."""
    first = checkout(url_of(upstream), "db-stable", cache_dir=str(cache))
    git.tag(first.path, "fastdowntime/20270101-1", first.tip or "")
    new = advance(work, upstream, "v2")
    git.git(str(upstream), "branch", "-D", "feature")
    again = checkout(url_of(upstream), "db-stable", cache_dir=str(cache))
    assert again.path == first.path and again.tip == new != first.tip
    assert set(refs(Path(again.path))) == {"refs/heads/db-stable",
                                           "refs/tags/fastdowntime/20270101-1"}


def test_a_bad_url_is_bad_input_naming_it(cache: Path, tmp_path: Path) -> None:
    """A URL git cannot fetch: exit 2, the URL and git's own words; no empty mirror left."""
    url = url_of(tmp_path / "nowhere.git")
    with pytest.raises(BadInput) as caught:
        checkout(url, "db-stable", cache_dir=str(cache))
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert f"cannot fetch {url}" in str(caught.value)
    assert "does not appear to be a git repository" in str(caught.value)
    assert not mirror_path(url, cache).exists()


def test_a_failed_fetch_never_shows_the_password(cache: Path) -> None:
    """git's message about an https URL with a token keeps the token out."""
    with pytest.raises(BadInput) as caught:
        checkout("https://ci:s3cret@127.0.0.1:1/app.git", "db-stable", cache_dir=str(cache),
                 timeout_s=30)
    assert "s3cret" not in str(caught.value) and "https://ci:***@127.0.0.1:1" in str(caught.value)


def test_a_branch_the_url_lacks_is_named(upstream: Path, cache: Path) -> None:
    """The branch is looked for in the mirror, and its absence names the URL."""
    with pytest.raises(BadInput, match=f"branch 'stable': not found in {url_of(upstream)}"):
        checkout(url_of(upstream), "stable", cache_dir=str(cache))


def test_a_fetch_that_hangs_is_killed_at_the_timeout(cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport that never answers (here an ssh that sleeps) is killed with its whole
    session at the timeout: bad input naming the timeout, not a hung deploy."""
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 60; true")
    started = time.monotonic()
    with pytest.raises(BadInput, match=r"took more than 0.5 s \(\[source\] fetch_timeout_s\)"):
        checkout("ssh://git@git.example.com/app.git", "db-stable", cache_dir=str(cache),
                 timeout_s=0.5)
    assert time.monotonic() - started < 10


def test_without_fetch_the_mirror_is_read_as_it_stands(upstream: Path, cache: Path,
                                                       work: GitRepo) -> None:
    """``fetch=False`` (rollback, resume) fetches only a mirror that does not exist yet."""
    first = checkout(url_of(upstream), "db-stable", cache_dir=str(cache), fetch=False)
    assert first.fetched is not None and git.resolve(first.path, work.head(), what="rev")
    new = advance(work, upstream, "v2")
    again = checkout(url_of(upstream), "db-stable", cache_dir=str(cache), fetch=False)
    assert again.fetched is None and again.tip is None
    with pytest.raises(BadInput, match="unknown revision"):
        git.resolve(again.path, new, what="rev")


# --- concurrent runs ------------------------------------------------------------------------


def test_concurrent_fetches_of_one_url_take_turns(upstream: Path, cache: Path,
                                                  work: GitRepo) -> None:
    """Runs that fetch one URL at once all succeed and leave a sound mirror."""
    results: list[str | None] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(checkout(url_of(upstream), "db-stable", cache_dir=str(cache)).tip)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [work.head()] * 6
    git.git(str(mirror_path(url_of(upstream), cache)), "fsck", "--no-progress")


def test_a_fetch_waits_for_the_lock_then_names_its_holder(upstream: Path,
                                                          cache: Path) -> None:
    """Another process holding the fetch lock: the fetch waits up to the timeout, polling,
    then says who holds it."""
    lock = cache / "locks" / f"{mirror_path(url_of(upstream), cache).stem}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("pid 4242, alice, since 2027-01-01T00:00:00.000Z\n")
    clock = FakeClock()
    with lock.open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BadInput, match=r"held .* for more than 2 s \(pid 4242, alice"):
            checkout(url_of(upstream), "db-stable", cache_dir=str(cache), timeout_s=2,
                     clock=clock, sleep=clock.sleep)
    assert sum(clock.sleeps) >= 2 and not mirror_path(url_of(upstream), cache).exists()


def test_the_lock_is_taken_once_the_holder_lets_go(upstream: Path, cache: Path) -> None:
    """A holder that finishes while the fetch waits: the fetch then goes ahead."""
    lock = cache / "locks" / f"{mirror_path(url_of(upstream), cache).stem}.lock"
    lock.parent.mkdir(parents=True)
    held = lock.open("w")
    fcntl.flock(held, fcntl.LOCK_EX)
    clock = FakeClock(on_sleep=held.close)  # the holder ends during the first wait
    found = checkout(url_of(upstream), "db-stable", cache_dir=str(cache), clock=clock,
                     sleep=clock.sleep)
    assert found.tip is not None and len(clock.sleeps) == 1
    assert "pid" in lock.read_text()


# --- a local repository with [source] fetch ------------------------------------------------


@pytest.fixture
def clone(tmp_path: Path, upstream: Path) -> GitRepo:
    """The release manager's working copy of upstream, on db-stable."""
    return GitRepo(tmp_path / "clone", clone_of=str(upstream))


def test_a_named_remote_is_fetched_and_planned_as_it_has_the_branch(
        clone: GitRepo, upstream: Path, work: GitRepo, cache: Path) -> None:
    """``fetch = "origin"``: the remote's branch is fetched into refs/remotes/origin and
    planned from there; the working tree, HEAD and the local branch stay as they were."""
    head, status = clone.head(), clone.git("status", "--porcelain")
    (clone.path / "app" / "main.py").write_text("my local edit\n")
    new = advance(work, upstream, "v2")
    found = checkout(str(clone.path), "db-stable", remote="origin", cache_dir=str(cache))
    assert (found.ref, found.tip, found.remote) == ("refs/remotes/origin/db-stable", new,
                                                    "origin")
    assert found.path == str(clone.path) and found.fetched is not None
    assert clone.head() == head and clone.git("rev-parse", "db-stable") == head
    assert (clone.path / "app" / "main.py").read_text() == "my local edit\n"
    assert clone.git("status", "--porcelain", "--untracked-files=no") != status  # the edit
    assert not (clone.path / ".git" / "FETCH_HEAD").exists()


def test_without_fetch_a_local_repository_is_read_as_it_stands(
        clone: GitRepo, upstream: Path, work: GitRepo, cache: Path) -> None:
    """No ``fetch``: the local branch is planned and nothing is fetched."""
    head = clone.head()
    advance(work, upstream, "v2")
    found = checkout(str(clone.path), "db-stable", cache_dir=str(cache))
    assert (found.ref, found.tip, found.fetched) == ("refs/heads/db-stable", head, None)
    assert not cache.exists()


def test_an_unknown_remote_or_branch_is_named(clone: GitRepo, cache: Path) -> None:
    """A remote the repository lacks, or a branch the remote lacks: bad input naming it."""
    with pytest.raises(BadInput, match="remote 'upstream' of .*'upstream' does not appear"):
        checkout(str(clone.path), "db-stable", remote="upstream", cache_dir=str(cache))
    with pytest.raises(BadInput, match="cannot fetch stable from remote 'origin'.*couldn't "
                                       "find remote ref refs/heads/stable"):
        checkout(str(clone.path), "stable", remote="origin", cache_dir=str(cache))
    with pytest.raises(BadInput, match="not a branch name"):
        checkout(str(clone.path), "a:b", remote="origin", cache_dir=str(cache))


# --- config, the plan and its readers --------------------------------------------------------


def write_config(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(f"[source]\n{source}\n")
    return path


def test_config_keys_are_checked_and_resolved(tmp_path: Path) -> None:
    """``cache_dir`` is relative to the file; ``fetch`` is a remote's name and only for a
    local repo; a URL is kept as written."""
    config = load_config(write_config(tmp_path, 'repo = "git@git.example.com:app/app.git"\n'
                                                'cache_dir = "cache"\nfetch_timeout_s = 60'))
    assert config.source.repo == "git@git.example.com:app/app.git"
    assert config.source.cache_dir == str(tmp_path / "cache")
    assert config.source.fetch_timeout_s == 60.0 and config.source.fetch is None
    for source, key in [('repo = "https://h/app.git"\nfetch = "origin"', "source.fetch"),
                        ('repo = "."\nfetch = "--upload-pack=x"', "source.fetch"),
                        ('repo = "."\nfetch_timeout_s = 0', "source.fetch_timeout_s")]:
        with pytest.raises(ConfigError) as caught:
            load_config(write_config(tmp_path, source))
        assert caught.value.key == key


def test_plan_json_carries_the_fetched_tip_and_time(
        tmp_path: Path, upstream: Path, work: GitRepo, cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``plan --json`` from a config whose repo is a URL: the plan of the fetched branch,
    with ``source`` saying which URL, which mirror, the tip and when it was fetched."""
    base = work.git("rev-list", "--max-parents=0", "HEAD")
    new = advance(work, upstream, "v2")
    config = write_config(tmp_path, f'repo = "{url_of(upstream)}"\ncache_dir = "{cache}"')
    before = time.time()
    assert cli.main(["-c", str(config), "plan", "--from", base, "--json"]) == ExitCode.OK
    data = json.loads(capsys.readouterr().out)
    source = data["source"]
    assert data["to"] == source["tip"] == new and len(data["revisions"]) == 3
    assert source["repo"] == url_of(upstream) and source["ref"] == "refs/heads/db-stable"
    assert source["path"] == str(mirror_path(url_of(upstream), cache))
    fetched = time.mktime(time.strptime(source["fetched"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 2 <= fetched - time.timezone <= time.time() + 1
    assert cli.main(["-c", str(config), "plan", "--from", base]) == ExitCode.OK
    text = capsys.readouterr().out
    assert f"source: {url_of(upstream)}" in text and f"at {new[:12]}, fetched" in text


def test_plan_flags_fetch_a_remote_and_read_the_sql_from_the_mirror(
        tmp_path: Path, clone: GitRepo, upstream: Path, work: GitRepo,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``plan --repo DIR --fetch origin``: the remote's tip; ``plan --repo URL --sql``
    reads the permissions file from the mirror."""
    base = work.git("rev-list", "--max-parents=0", "HEAD")
    new = advance(work, upstream, "v2")
    config = write_config(tmp_path, f'cache_dir = "{tmp_path / "cache"}"')
    assert cli.main(["-c", str(config), "plan", "--repo", str(clone.path), "--fetch", "origin",
                     "--from", base, "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["to"] == new
    assert cli.main(["-c", str(config), "plan", "--repo", url_of(upstream), "--from", base,
                     "--sql", "--permissions", "database/schema/security.sql"]) == ExitCode.OK
    sql = capsys.readouterr().out
    assert f"-- source    {url_of(upstream)}" in sql and "-- p" in sql


def test_a_bad_url_in_the_config_exits_2(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``plan`` with an unreachable repository: exit 2, the URL and git's words."""
    url = url_of(tmp_path / "gone.git")
    config = write_config(tmp_path, f'repo = "{url}"\ncache_dir = "{tmp_path / "cache"}"')
    assert cli.main(["-c", str(config), "plan", "--from", "0" * 40]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert f"cannot fetch {url}" in err and "does not appear to be a git repository" in err


def test_every_reader_reads_the_checkout(tmp_path: Path, upstream: Path, cache: Path) -> None:
    """After ``checked_out`` the config's repository is the mirror, fetched once per
    command: checking out again does not fetch."""
    config = load_config(write_config(tmp_path, f'repo = "{url_of(upstream)}"\n'
                                                f'cache_dir = "{cache}"'))
    with pytest.raises(RuntimeError, match="before it was fetched"):
        _ = config.repository
    fetched = checked_out(config)
    assert fetched.repository == str(mirror_path(url_of(upstream), cache))
    assert checked_out(fetched) is fetched
    os.rename(upstream, tmp_path / "moved.git")  # a second fetch would fail now
    assert checked_out(fetched).repository == fetched.repository


def test_the_cut_is_tagged_in_the_mirror_and_shipped_from_it(
        tmp_path: Path, upstream: Path, work: GitRepo, cache: Path) -> None:
    """After a committed window the cut is tagged in the mirror (nothing is pushed), the tag
    outlives the next fetch, and the release shipped to the hosts is archived from the
    mirror."""
    from orchestrator.remote import operations as ops
    from orchestrator.runner.deploy import _after_window
    from orchestrator.runner.planning import build_plan, rules_for
    from tests.fakes import RecordingJournal, make_run

    base = work.git("rev-list", "--max-parents=0", "HEAD")
    config = checked_out(load_config(write_config(
        tmp_path, f'repo = "{url_of(upstream)}"\ncache_dir = "{cache}"')))
    plan = build_plan(config.repository, "db-stable", base, None, rules_for(config),
                      source=config.checkout)
    assert plan.cut is not None
    journal = RecordingJournal()
    run = make_run(config, plan=plan, journal=journal, committed=True, run_id="20270101-1")
    _after_window(config, plan, run, journal, {})
    assert journal.named("tag")[0]["ok"] is True
    assert journal.named("tag")[0]["repository"] == config.repository
    checkout(url_of(upstream), "db-stable", cache_dir=str(cache))
    assert refs(Path(config.repository))["refs/tags/fastdowntime/20270101-1"] == plan.cut
    assert "refs/tags/fastdowntime/20270101-1" not in refs(upstream)
    assert ops.archive(config.repository, plan.cut).data[:100]


def test_the_cut_tag_takes_turns_with_a_fetch_of_the_mirror(
        tmp_path: Path, upstream: Path, work: GitRepo, cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another command fetching the mirror holds its lock: the tag waits for it, and is
    made once it lets go; a fetch that outlasts the wait leaves the tag unmade, journaled
    as refused naming the holder (the deploy is over, it does not fail)."""
    from orchestrator.runner import deploy as deploy_module
    from orchestrator.runner.planning import build_plan, rules_for
    from tests.fakes import RecordingJournal, make_run

    base = work.git("rev-list", "--max-parents=0", "HEAD")
    config = checked_out(load_config(write_config(
        tmp_path, f'repo = "{url_of(upstream)}"\ncache_dir = "{cache}"')))
    plan = build_plan(config.repository, "db-stable", base, None, rules_for(config),
                      source=config.checkout)
    lock = cache / "locks" / f"{mirror_path(url_of(upstream), cache).stem}.lock"
    held = lock.open("r+")
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write("pid 4242, alice, fetching\n")
    held.flush()
    monkeypatch.setattr(deploy_module, "TAG_LOCK_S", 0.3)
    journal = RecordingJournal()
    run = make_run(config, plan=plan, journal=journal, committed=True, run_id="20270101-1")
    deploy_module._after_window(config, plan, run, journal, {})
    event = journal.named("tag")[0]
    assert event["ok"] is False and "pid 4242, alice" in event["error"]
    assert "refs/tags/fastdowntime/20270101-1" not in refs(Path(config.repository))
    monkeypatch.setattr(deploy_module, "TAG_LOCK_S", 30.0)
    threading.Timer(0.3, held.close).start()  # the fetch ends while the tag waits
    started = time.monotonic()
    again = make_run(config, plan=plan, journal=journal, committed=True, run_id="20270101-2")
    deploy_module._after_window(config, plan, again, journal, {})
    assert journal.named("tag")[1]["ok"] is True and time.monotonic() - started >= 0.25
    assert refs(Path(config.repository))["refs/tags/fastdowntime/20270101-2"] == plan.cut


def test_a_local_repository_nobody_fetches_holds_no_lock(work: GitRepo, cache: Path) -> None:
    """Without [source] fetch a local repository is read as it stands: tagging it takes no
    lock (and makes no lock file); with a remote to fetch, it takes the fetches' lock."""
    from orchestrator.history.checkout import fetch_lock

    with fetch_lock(str(work.path), cache_dir=str(cache)):
        assert not (cache / "locks").exists()
    with fetch_lock(str(work.path), remote="origin", cache_dir=str(cache)):
        assert list((cache / "locks").iterdir())


def test_rollback_and_resume_fetch_but_do_without_the_network(
        upstream: Path, cache: Path, work: GitRepo, tmp_path: Path) -> None:
    """``refreshed`` fetches (a revision deployed from elsewhere is then here); when the URL
    cannot be reached it reads the mirror as the last fetch left it, and says so."""
    import dataclasses

    from orchestrator.config import Config, SourceSettings
    from orchestrator.runner.planning import refreshed

    config = dataclasses.replace(Config(path=None), source=SourceSettings(
        repo=url_of(upstream), cache_dir=str(cache), fetch_timeout_s=30))
    checked_out(config)  # the mirror, as a deploy left it
    newer = advance(work, upstream, "Deployed from another machine")
    said: list[str] = []
    found = refreshed(config, said.append)
    assert found.checkout is not None and found.checkout.tip == newer and not said
    upstream.rename(tmp_path / "gone.git")
    found = refreshed(config, said.append)
    assert found.checkout is not None and found.checkout.fetched is None
    assert len(said) == 1 and "as the last fetch left it" in said[0]
    assert git.resolve(found.repository, newer, what="test") == newer  # the last fetch's
