"""Where a command reads git: ``[source] repo``, fetched, and the branch's tip in it.

- **A URL** (``https://``, ``ssh://``, ``file://``, scp-like ``user@host:path``) is read
  from a bare mirror under the cache directory, one per URL, named for it
  (``<cache>/mirrors/<host-and-path>-<hash>.git``), fetched before every plan: every
  branch as the URL has it (a branch deleted there is deleted here) and every tag (forced,
  so a tag moved there moves here; never pruned, so the cut tags made here stay). The
  first fetch fills an empty repository (``git init --bare``): that is ``git clone
  --mirror`` without its ``+refs/*:refs/*``, which would pull every ``refs/pull/*`` of a
  forge and prune the tags made here on the next fetch. The branch planned is
  ``refs/heads/<branch>`` of the mirror.
- **A local repository** is read as it stands, unless ``[source] fetch`` names one of its
  remotes: then only that remote's branch is fetched, into
  ``refs/remotes/<remote>/<branch>`` (``git fetch <remote>
  +refs/heads/<branch>:refs/remotes/<remote>/<branch>``, with the tags that point into it,
  as ``git fetch`` follows them), and planned from there. Nothing else of the repository
  changes: not its working tree, index, local branches or config.

Fetches of one repository take turns, across processes: an exclusive ``flock`` on
``<cache>/locks/<name>.lock``, waited for at most the fetch timeout. A fetch that fails
(an unknown host, a repository that is not there, a branch the remote lacks, the timeout)
is bad input (exit 2) naming the URL, without its password, and git's own words.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput
from orchestrator.history import git
from orchestrator.instants import iso_ms

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^[^/]+@[^/]+:", re.IGNORECASE)
"""``scheme://...`` or scp-like ``user@host:path`` (a path with a colon but no ``@`` stays a
path)."""
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<info>[^/]*)@", re.IGNORECASE)
"""A URL's ``user[:password]@`` (up to its last ``@`` before the path: a password may hold
one)."""
_TOKEN_SCHEMES = ("http://", "https://")
"""Where a user name alone may be a secret (``https://<token>@host/...``, as forges issue)."""
_BRANCH = re.compile(r"[^\s:?*\[\\^~]+")
"""What a branch name may hold here: it is written into a refspec."""
REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""What ``[source] fetch`` may be: a remote's name, no option, no path, no URL."""

MIRRORS = "mirrors"
LOCKS = "locks"
LOCK_POLL_S = 0.1


def is_url(repo: str) -> bool:
    """True when ``repo`` names a repository to fetch (a URL, scp-like ``user@host:path``),
    False for a local path."""
    return bool(_URL.match(repo))


def masked(url: str) -> str:
    """``url`` fit to print and keep: a password in it (``https://user:token@host``) is
    replaced by ``***``, and so is an http(s) URL's user name (``https://<token>@host``);
    an ssh login name (``ssh://git@host``) stays."""
    found = _USERINFO.match(url)
    if found is None:
        return url
    scheme, info, rest = found["scheme"], found["info"], url[found.end():]
    if ":" in info:
        return f"{scheme}{info.split(':', 1)[0]}:***@{rest}"
    if scheme.lower() in _TOKEN_SCHEMES:
        return f"{scheme}***@{rest}"
    return url


def without_userinfo(url: str) -> str:
    """``url`` without its user and password: what names its mirror, so that a token that
    changes does not make a new one."""
    found = _USERINFO.match(url)
    return url if found is None else f"{found['scheme']}{url[found.end():]}"


def cache_root(configured: str | None = None) -> Path:
    """``[source] cache_dir`` when set, else ``$XDG_CACHE_HOME/fastdowntime`` (an absolute
    ``XDG_CACHE_HOME``), else ``~/.cache/fastdowntime``."""
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastdowntime"


def cache_name(key: str) -> str:
    """A readable, unique file name for ``key`` (a URL or a path): its host and path as a
    slug, then 12 hex digits of its hash. ``git@git.example.com:app/app.git`` ->
    ``git.example.com-app-app-3f1c0e...``."""
    plain = without_userinfo(key)
    readable = re.sub(r"^[a-z][a-z0-9+.-]*://|^[^/@]*@", "", plain)
    readable = re.sub(r"\.git/?$", "", readable)
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", readable).strip("-.")[:60].strip("-.") or "repo"
    return f"{slug}-{hashlib.sha256(plain.encode()).hexdigest()[:12]}"


def mirror_path(url: str, cache: Path) -> Path:
    """Where the mirror of ``url`` lives under ``cache``."""
    return cache / MIRRORS / f"{cache_name(url)}.git"


@dataclass(frozen=True)
class Checkout:
    """The repository one command reads, and what was fetched into it.

    ``repo`` is ``[source] repo`` as configured (password masked); ``path`` the local
    repository git reads (a URL's mirror, or ``repo`` itself); ``ref`` the ref whose tip
    is the branch's (``refs/heads/<branch>``, ``refs/remotes/<remote>/<branch>``);
    ``tip`` that commit, read once, right after the fetch: the plan's default target
    (both None when the branch was not read: ``fetch=False``). ``fetched`` is when (UTC,
    ISO 8601 to the millisecond), None when nothing was fetched (a local repository as it
    stands); ``remote`` what is fetched: the URL (masked) or the remote's name.
    """

    repo: str
    path: str
    ref: str | None = None
    tip: str | None = None
    fetched: str | None = None
    remote: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "path": self.path, "ref": self.ref, "tip": self.tip,
                "fetched": self.fetched, "remote": self.remote}

    def describe(self) -> str:
        """One line: what was read, fetched from where and when."""
        where = self.repo if self.path == self.repo else f"{self.repo} (mirror {self.path})"
        branch = f", {self.ref} at {self.tip[:12]}" if self.ref and self.tip else ""
        if self.fetched is None:
            return f"{where}{branch}, not fetched: as it stands"
        via = f" from {self.remote}" if self.remote and self.remote != self.repo else ""
        return f"{where}{branch}, fetched{via} {self.fetched}"


def check_branch(branch: str) -> None:
    """BadInput unless ``branch`` can be a branch's name in a refspec."""
    if branch.startswith("-") or not _BRANCH.fullmatch(branch) or ".." in branch:
        raise BadInput(f"branch {branch!r}: not a branch name")


def checkout(repo: str, branch: str, *, remote: str | None = None,
             cache_dir: str | None = None, fetch: bool = True,
             timeout_s: float = git.TIMEOUT_S, now: Callable[[], float] = time.time,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Checkout:
    """Fetch ``repo`` as the module says and find ``branch``'s tip in it.

    ``remote``: for a local repository, the remote to fetch (``[source] fetch``).
    ``fetch=False`` neither fetches (but a mirror that does not exist yet) nor reads the
    branch: for commands that read revisions by sha, ones a deploy fetched. ``timeout_s``
    bounds the fetch and, apart, the wait for another process's. BadInput for a
    repository that is not one, a branch it lacks, a failed fetch.
    """
    check_branch(branch)
    if repo.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in repo):
        raise BadInput(f"{masked(repo)!r}: not a repository's path or URL")
    if is_url(repo):
        if remote is not None:
            raise BadInput(f"{masked(repo)}: a URL is fetched into its own mirror; [source] "
                           "fetch names a remote of a local repository")
        return _mirror(repo, branch, cache_root(cache_dir), fetch, timeout_s, now,
                       _Waiter(timeout_s, sleep, clock))
    git.check_repository(repo)
    if remote is not None and not REMOTE_NAME.fullmatch(remote):
        raise BadInput(f"[source] fetch {remote!r}: not the name of a remote")
    if not fetch:
        return Checkout(repo, repo, remote=remote)
    if remote is None:
        ref, tip = git.find_branch(repo, branch, (f"refs/heads/{branch}",
                                                  f"refs/remotes/origin/{branch}"))
        return Checkout(repo, repo, ref, tip)
    ref = f"refs/remotes/{remote}/{branch}"
    with _locked(_lock_path(repo, cache_root(cache_dir)), f"{repo} (remote {remote})",
                 _Waiter(timeout_s, sleep, clock)):
        git.fetch(repo, remote, [f"+refs/heads/{branch}:{ref}"],
                  what=f"{branch} from remote {remote!r} of {repo}", timeout_s=timeout_s,
                  options=("-c", f"remote.{remote}.uploadpack=git-upload-pack"))
        fetched = iso_ms(now())
        ref, tip = git.find_branch(repo, branch, (ref,), f"{repo} (remote {remote})")
    return Checkout(repo, repo, ref, tip, fetched, remote)


@contextlib.contextmanager
def fetch_lock(repo: str, *, remote: str | None = None, cache_dir: str | None = None,
               timeout_s: float = git.TIMEOUT_S, sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Hold the lock the fetches of ``repo`` (``[source] repo``, with ``[source] fetch`` as
    ``remote``) take turns on, for a block that writes refs beside them (a cut's tag): a
    fetch rewrites the refs it brings. A local repository with no remote is never fetched
    here: nothing is held. Waits for a fetch at most ``timeout_s``, then BadInput."""
    if not is_url(repo) and remote is None:
        yield
        return
    with _locked(_lock_path(repo, cache_root(cache_dir)), masked(repo),
                 _Waiter(timeout_s, sleep, clock)):
        yield


def _lock_path(repo: str, cache: Path) -> Path:
    """The fetch lock of ``repo``: its mirror's name for a URL, its absolute path's else."""
    name = mirror_path(repo, cache).stem if is_url(repo) else cache_name(os.path.abspath(repo))
    return cache / LOCKS / f"{name}.lock"


def _mirror(url: str, branch: str, cache: Path, fetch: bool, timeout_s: float,
            now: Callable[[], float], waiter: _Waiter) -> Checkout:
    shown = masked(url)
    path = mirror_path(url, cache)
    with _locked(_lock_path(url, cache), shown, waiter):
        exists = (path / "HEAD").exists()
        if exists and not fetch:
            return Checkout(shown, str(path), remote=shown)
        if not exists:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            git.init_bare(str(path))
        try:
            git.fetch(str(path), url, ["+refs/heads/*:refs/heads/*"],
                      what=f"{shown} (into {path})", shown=shown, prune=True, tags=True,
                      timeout_s=timeout_s)
        except BaseException:
            if not exists:  # a mistyped URL leaves no empty mirror behind
                shutil.rmtree(path, ignore_errors=True)
            raise
        fetched = iso_ms(now())
        if not fetch:
            return Checkout(shown, str(path), fetched=fetched, remote=shown)
        ref, tip = git.find_branch(str(path), branch, (f"refs/heads/{branch}",),
                                   f"{shown} (mirror {path})")
    return Checkout(shown, str(path), ref, tip, fetched, shown)


@dataclass(frozen=True)
class _Waiter:
    """How long to wait for a lock, and the clock and sleep to do it with (tests pass
    their own)."""

    timeout_s: float
    sleep: Callable[[float], None]
    clock: Callable[[], float]


@contextlib.contextmanager
def _locked(path: Path, what: str, waiter: _Waiter) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if need be) for the block; it dies
    with this process. Waits for another holder at most ``waiter.timeout_s``, then
    BadInput naming the holder the file records."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BadInput(f"{what}: cannot open the fetch lock {path}: {exc.strerror or exc} "
                       "([source] cache_dir)") from None
    try:
        deadline = waiter.clock() + waiter.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waiter.clock() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    raise BadInput(f"{what}: another command (a fetch, or a cut's tag) has "
                                   f"held {path} for more than {waiter.timeout_s:g} s "
                                   f"({holder or 'holder unknown'})") from None
                waiter.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {_user()}, since {iso_ms(time.time())}\n".encode(),
                  0)
        yield
    finally:
        os.close(fd)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


__all__ = ["REMOTE_NAME", "Checkout", "cache_name", "cache_root", "check_branch", "checkout",
           "fetch_lock", "is_url", "masked", "mirror_path", "without_userinfo"]
