"""Thin, process-counted access to a git repository.

Every function runs one git process, whatever the size of the range: the
planner reads a 20,000-revision history with one ``git log``, its patch
files with one ``git cat-file --batch`` and the tree with one ``ls-tree``.
Git's own failures become :class:`~orchestrator.errors.BadInput` naming the
repository and the revision.

Every git process of the orchestrator (fetching the source, the planner,
staging's archive, tagging a cut, the sandbox building its sample repository)
runs from here: one environment (no user or system config, no pager, no
prompt, C locale), the same guard options, and a deadline (:data:`TIMEOUT_S`,
or ``[source] fetch_timeout_s`` for a fetch). A fetch alone adds to the
environment what the network needs (the ssh agent, proxies): :func:`fetch`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from orchestrator.errors import BadInput

ZERO = "0" * 40


class GitError(BadInput):
    """A git command failed on the input it was given (repository, branch, revision)."""


TIMEOUT_S = 300.0
"""The longest any one git process may take (a 20,000-revision log takes about a second)."""


def git(repo: str, *args: str, input: bytes | None = None, check: bool = True,
        env: Mapping[str, str] | None = None, options: Sequence[str] = (),
        timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C repo args``; raise GitError with git's message when ``check`` and it fails
    (or when it outlives ``timeout_s``, :data:`TIMEOUT_S` unless told). ``env`` adds to the
    one environment (author dates, say); ``options`` are more ``-c key=value`` pairs."""
    argv = ["git", *_OPTIONS, *options, "-C", repo, *args]
    try:
        done = _run(argv, input, _environment(env), timeout_s)
    except subprocess.TimeoutExpired:
        raise GitError(f"{repo}: git {args[0]} took more than {timeout_s:g} s") from None
    except OSError as exc:
        raise GitError(f"{repo}: cannot run git: {exc}") from None
    if check and done.returncode != 0:
        raise GitError(_failure(repo, args[0], done.stderr))
    return done


def _run(argv: Sequence[str], input: bytes | None, env: Mapping[str, str],
         timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in a session of its own and, on a timeout or an interrupt, kill the whole
    session: a fetch's ssh or https helper dies with git instead of holding its pipes (and
    this process) open."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _failure(repo: str, command: str, stderr: bytes) -> str:
    text = stderr.decode(errors="replace").strip()
    if "dubious ownership" in text:
        return (f"{repo}: owned by another user, and git does not read such a repository "
                "(it could run programs from its config): run as its owner, or give the "
                "repository to the user who deploys")
    lines = text.splitlines()
    return f"{repo}: git {command} failed: {lines[-1] if lines else 'no output'}"


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**_ENV, **extra} if extra else _ENV


_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C",
        "HOME": "/nonexistent", "GIT_TERMINAL_PROMPT": "0"}
"""git without the user's or the system's config, aliases, pager or locale."""

_OPTIONS = ("-c", "log.showSignature=false", "-c", "gpg.program=/bin/false",
            "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
            "-c", "core.pager=cat", "-c", "core.askPass=/bin/false")
"""A repository's own config may not make git run a program: no signature checks (and no gpg
to run them), no fsmonitor, no hooks, no external diff, no pager, no password prompt.
Command-line settings win over the repository's. Nor is ``safe.directory=*`` given: a
repository owned by another user is refused by git, as git refuses it to its own user."""


_NETWORK_PASSED = ("SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "http_proxy", "https_proxy",
                   "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
                   "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO")
"""What a fetch takes from the user's environment: the ssh agent (and an ssh command of
their own), proxies and CA certificates. ssh reads ``~/.ssh`` from the passwd entry's home,
whatever ``HOME`` says."""

_FETCH_OPTIONS = ("-c", "credential.helper=", "-c", "protocol.ext.allow=never",
                  "-c", "gc.auto=0", "-c", "maintenance.auto=false")
"""No credential helper (a program) from any config, no ``ext::`` URL (a command); no
automatic gc or maintenance detached after the fetch, holding the repository's locks while
the next command (a cut's tag, another fetch) needs them."""


def fetch(repo: str, source: str, refspecs: Sequence[str], *, what: str,
          shown: str | None = None, prune: bool = False, tags: bool = False,
          timeout_s: float = TIMEOUT_S, options: Sequence[str] = ()) -> None:
    """``git fetch`` ``refspecs`` of ``source`` (a URL, or a remote of ``repo`` by name) into
    ``repo``; never a prompt (ssh in batch mode unless ``GIT_SSH_COMMAND`` says otherwise),
    never a submodule, no ``FETCH_HEAD``. ``prune`` drops the refs the refspecs cover that
    ``source`` no longer has; ``tags`` fetches every tag as well (forced: a tag moved
    upstream moves here) and never prunes one. GitError naming ``what`` was fetched and
    git's message (in which ``source`` is ``shown``: a URL without its password), or the
    timeout."""
    passed = {name: os.environ[name] for name in _NETWORK_PASSED if os.environ.get(name)}
    env = {"GIT_SSH_COMMAND": "ssh -o BatchMode=yes", **passed}
    flags = ["--quiet", "--no-recurse-submodules", "--no-write-fetch-head",
             *(["--prune"] if prune else []), *(["--tags", "--force"] if tags else [])]
    argv = ["git", *_OPTIONS, *_FETCH_OPTIONS, *options, "-C", repo, "fetch", *flags,
            "--end-of-options", source, *refspecs]
    try:
        done = _run(argv, None, _environment(env), timeout_s)
    except subprocess.TimeoutExpired:
        raise GitError(f"cannot fetch {what}: git fetch took more than {timeout_s:g} s "
                       "([source] fetch_timeout_s)") from None
    except OSError as exc:
        raise GitError(f"cannot fetch {what}: cannot run git: {exc}") from None
    if done.returncode != 0:
        reason = fetch_failure(done.stderr)
        if shown is not None:
            reason = reason.replace(source, shown)
        raise GitError(f"cannot fetch {what}: {reason}")


def fetch_failure(stderr: bytes) -> str:
    """What went wrong, from a failed fetch's stderr: its lines (the transport's own, such as
    ssh's "Host key verification failed.", and git's ``fatal:`` and ``error:``), without
    git's generic advice, at most three, once each."""
    said: list[str] = []
    for line in stderr.decode(errors="replace").splitlines():
        line = line.strip().removeprefix("fatal: ").removeprefix("error: ")
        if line and not line.startswith(_ADVICE) and line not in said:
            said.append(line)
    if len(said) > 1 and _GENERIC in said:
        said.remove(_GENERIC)
    return "; ".join(said[:3]) or "no output"


_GENERIC = "Could not read from remote repository."
_ADVICE = ("Please make sure you have the correct access rights", "and the repository exists",
           "hint:")


def init_bare(path: str) -> None:
    """Create an empty bare repository at ``path`` (its parent must exist)."""
    parent, name = os.path.split(os.path.abspath(path))
    git(parent, "init", "--quiet", "--bare", "--end-of-options", name)


def blob_sha(data: bytes) -> str:
    """git's object id of a blob with ``data``: what ``ls-tree`` lists for that content.

    Used as the checksum of an applied patch, so a tree can be compared with
    the database without reading a single file.
    """
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def check_repository(repo: str) -> None:
    """Raise BadInput unless ``repo`` is a git repository (work tree or bare)."""
    if not Path(repo).is_dir():
        raise BadInput(f"{repo}: not a directory (the repository to plan from)")
    done = git(repo, "rev-parse", "--git-dir", check=False)
    if done.returncode != 0:
        if b"dubious ownership" in done.stderr:
            raise GitError(_failure(repo, "rev-parse", done.stderr))
        raise BadInput(f"{repo}: not a git repository")


def resolve(repo: str, rev: str, *, what: str) -> str:
    """The full sha of commit ``rev``; BadInput naming ``what`` and ``rev`` when unknown."""
    if not rev or rev.startswith("-"):
        raise BadInput(f"{what} {rev!r}: not a revision", key=what.rsplit(" ", 1)[-1])
    done = git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
               check=False)
    if done.returncode != 0:
        raise BadInput(f"{what} {rev!r}: unknown revision in {repo}",
                       key=what.rsplit(" ", 1)[-1])
    return done.stdout.decode().strip()


def resolve_branch(repo: str, branch: str) -> str:
    """The tip of ``branch`` (local, else ``origin/branch``); BadInput when neither exists."""
    return find_branch(repo, branch, (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"))[1]


def find_branch(repo: str, branch: str, refs: Sequence[str], where: str | None = None,
                ) -> tuple[str, str]:
    """The first of ``refs`` that names a commit, and that commit: ``(ref, sha)``. BadInput
    naming ``branch`` and ``where`` (default ``repo``) when none does."""
    for ref in refs:
        done = git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if done.returncode == 0:
            return ref, done.stdout.decode().strip()
    raise BadInput(f"branch {branch!r}: not found in {where or repo}")


def is_ancestor(repo: str, older: str, newer: str) -> bool:
    """True when ``older`` is an ancestor of (or equal to) ``newer``."""
    done = git(repo, "merge-base", "--is-ancestor", older, newer, check=False)
    if done.returncode not in (0, 1):
        raise GitError(f"{repo}: git merge-base failed: {done.stderr.decode().strip()}")
    return done.returncode == 0


GRAPH: tuple[str, ...] = ()
"""Every commit with its parents and subject, no diff: the graph alone."""
OWN_CHANGES = ("--raw", "--full-history", "--diff-merges=combined")
"""What each commit's author changed: a non-merge's own diff, a merge's combined diff (the
files it changes against every parent: its own resolution)."""
FIRST_PARENT = ("--raw", "--first-parent", "--diff-merges=first-parent")
"""The first-parent chain, each commit with its diff against its first parent."""


def log_range(repo: str, spec: str, options: Sequence[str], paths: Sequence[str] = (),
              timeout_s: float = TIMEOUT_S) -> Iterator[bytes]:
    """Stream the raw ``git log`` of the commits in ``spec`` (``older..newer``) with
    ``options``, limited to ``paths`` (pathspecs) if any, in chunks as git writes them (so
    parsing overlaps git's work).

    Format per commit: ``\x01<sha> <parents>\x02<subject>\0`` then ``--raw -z``
    entries ``:<modes> <old blob> <new blob> <status>\0<path>\0`` (``::`` and one mode and
    blob per parent, then the merge's, for a combined diff).
    """
    argv = ["git", *_OPTIONS, "-C", repo, "log", "-z", "--format=%x01%H %P%x02%s",
            "--no-abbrev", "--no-renames", "--no-ext-diff", *options, spec, "--", *paths]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=_ENV) as proc:
        watchdog = threading.Timer(timeout_s, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None and proc.stderr is not None
            while chunk := proc.stdout.read1(1 << 16):  # type: ignore[attr-defined]
                yield chunk
            error = proc.stderr.read()
            code = proc.wait()
        finally:
            watchdog.cancel()
        if code != 0:
            if code == -9:
                raise GitError(f"{repo}: git log took more than {timeout_s:g} s")
            raise GitError(_failure(repo, "log", error))


def whole_diffs(repo: str, shas: Sequence[str]) -> dict[str, list[bytes]]:
    """The whole diff of each commit in ``shas`` (one ``git diff-tree --stdin``): a
    non-merge's own diff, a merge's combined diff. ``{sha: its raw -z fields}``, for
    :func:`orchestrator.history.parse_raw`."""
    if not shas:
        return {}
    out = git(repo, "diff-tree", "-r", "-z", "-c", "--root", "--raw", "--no-abbrev",
              "--no-renames", "--no-ext-diff",
              "--stdin",
              input="".join(f"{sha}\n" for sha in shas).encode()).stdout
    diffs: dict[str, list[bytes]] = {}
    current: list[bytes] = []
    fields = out.split(b"\0")
    i = 0
    while i < len(fields):
        field = fields[i].lstrip(b"\n")
        if field[:1] == b":":  # an entry: its meta, then its path
            current += fields[i:i + 2]
            i += 2
            continue
        if field:  # the next commit's sha
            current = diffs.setdefault(field.decode(), [])
        i += 1
    return diffs


def list_tree(repo: str, rev: str) -> dict[str, str]:
    """Every file of the tree of ``rev``: ``{path: blob id}``."""
    out = git(repo, "ls-tree", "-r", "-z", "--full-tree", rev).stdout
    files = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, kind, blob = meta.split()
        if kind == b"blob":
            files[path.decode("utf-8", "surrogateescape")] = blob.decode()
    return files


def read_blobs(repo: str, shas: Iterable[str]) -> dict[str, bytes]:
    """The contents of the given blobs, read with one ``git cat-file --batch``."""
    wanted: Sequence[str] = sorted(set(shas))
    if not wanted:
        return {}
    out = git(repo, "cat-file", "--batch", input="".join(f"{s}\n" for s in wanted).encode()).stdout
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in wanted:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if len(header) < 3 or header[1] == b"missing":
            raise GitError(f"{repo}: blob {sha} is missing")
        size = int(header[2])
        blobs[sha] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return blobs


def archive(repo: str, sha: str) -> bytes:
    """``git archive --format=tar sha``: the revision's tree as one tar archive."""
    return git(repo, "archive", "--format=tar", sha).stdout


def tag(repo: str, name: str, sha: str) -> str | None:
    """Tag ``sha`` as ``name``; git's message when it refused (an existing tag), else None."""
    done = git(repo, "tag", name, sha, check=False)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


def show(repo: str, rev: str, path: str) -> str:
    """The text of ``path`` at ``rev``."""
    return git(repo, "show", f"{rev}:{path}").stdout.decode("utf-8")
