"""The commands run on hosts, built as argv values; nothing here touches a host.

Every builder returns a :class:`Command`: an argv tuple that the SSH layer
renders with :func:`shlex.join`, so the host's shell parses it back to exactly
that argv. Host names, paths, revisions and ports travel only as separate argv
elements: either filled into one element of a config template
(:func:`template`), or as positional arguments ``$1``, ``$2`` ... of a
constant ``sh -c`` script written in this module (:func:`sh`). No value is
ever pasted into a shell string, so quotes, ``;``, ``$(...)``, newlines or a
leading ``-`` in a value stay inert. Scripts pass ``--`` before operands and
print values with ``printf '%s'``, never ``echo``.

Release layout on a host (the sandbox's, Capistrano's): ``<root>/releases/<sha>``,
``<root>/current -> releases/<sha>``. Shas are validated as 40 lowercase hex
digits; ports as integers 1-65535; anything else is :class:`BadInput`.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeGuard

from orchestrator.config import AppSettings, Config, HostSettings, ScriptsSettings
from orchestrator.errors import BadInput

PLACEHOLDERS = ("root", "release", "port", "address", "host")
"""The placeholders a config argv template may use (SPEC section 5, ``[app]``)."""

NO_CURRENT_EXIT = 3
"""Exit status of a script that finds no usable ``current`` link or release directory."""
CORRUPT_EXIT = 4
"""Exit status of :func:`receive_release` when the archive's checksum does not match."""
UNPACK_EXIT = 5
"""Exit status of :func:`receive_release` when unpacking or moving the release failed."""

_SHA = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Command:
    """One command for a host: its argv, and a few words saying what it does (for logs)."""

    argv: tuple[str, ...]
    description: str = ""

    def render(self) -> str:
        """The text the host's shell runs: ``shlex.join(argv)``, which parses back to argv."""
        return shlex.join(self.argv)


def sh(script: str, *args: str, description: str = "") -> Command:
    """``sh -c SCRIPT sh ARGS...``: run a constant script with values as ``$1``, ``$2`` ...

    ``script`` must be a constant written in the source (never built from a
    value); every value goes in ``args``.
    """
    return Command(("sh", "-c", script, "sh", *(_value("argument", a) for a in args)),
                   description)


def template(argv: Sequence[str], **values: str) -> Command:
    """Fill the ``{name}`` placeholders of a config argv, one element at a time.

    A value is substituted into its element as text: it never splits into
    several words and is never parsed again. ``{{`` and ``}}`` are literal
    braces. A placeholder that ``values`` lacks, or one with a conversion,
    format spec, index or attribute, is :class:`BadInput` naming it.
    """
    if not argv:
        raise BadInput("a command template is empty")
    for name, value in values.items():
        _value(name, value)
    return Command(tuple(fill(element, **values) for element in argv))


def fill(element: str, **values: str) -> str:
    """One template element (or a URL) with its ``{name}`` placeholders filled from ``values``.

    Raises :class:`BadInput` like :func:`template`; ``values`` may only name
    :data:`PLACEHOLDERS`.
    """
    extra = set(values) - set(PLACEHOLDERS)
    if extra:
        raise TypeError(f"not a placeholder: {', '.join(sorted(extra))}")  # a programming error
    out = []
    try:
        parsed = list(string.Formatter().parse(element))
    except ValueError as exc:
        raise BadInput(f"command template element {element!r}: {exc}") from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if spec or conversion or field not in values:
            known = ", ".join(f"{{{name}}}" for name in values) or "none"
            shown = "{" + field + (f"!{conversion}" if conversion else "") \
                + (f":{spec}" if spec else "") + "}"
            raise BadInput(f"command template element {element!r}: unknown placeholder "
                           f"{shown} (known here: {known})")
        out.append(values[field])
    return "".join(out)


# --- validation ---------------------------------------------------------------------------


def is_sha(value: object) -> TypeGuard[str]:
    """True if ``value`` is a full 40-hex-digit (lowercase) commit id."""
    return isinstance(value, str) and _SHA.fullmatch(value) is not None


def check_sha(sha: object) -> str:
    """``sha`` if it is a full 40-hex-digit commit id, else :class:`BadInput`."""
    if not is_sha(sha):
        raise BadInput(f"revision {sha!r} is not a full 40-character lowercase hex sha")
    return sha


def check_port(port: object) -> int:
    """``port`` if it is an integer from 1 to 65535, else :class:`BadInput`."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInput(f"port {port!r} is not an integer from 1 to 65535")
    return port


def _value(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{what} {value!r} is not a string")
    if "\0" in value:
        raise BadInput(f"{what} {value!r} holds a NUL byte, which no argv can carry")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadInput(f"{what} {value!r} is not text a host can be sent (a lone "
                       "surrogate has no UTF-8 form)") from None
    return value


def _path(what: str, value: object) -> str:
    path = _value(what, value)
    if not path:
        raise BadInput(f"{what} is empty")
    return path


# --- constant scripts ---------------------------------------------------------------------

_READ_REVISION = r"""link=$(readlink -- "$1/current") || {
  printf 'no current release link at %s/current\n' "$1" >&2; exit 3; }
link=${link%/}; sha=${link##*/}
if [ -z "$sha" ]; then
  printf '%s/current is an empty link\n' "$1" >&2; exit 3
fi
if [ ! -d "$1/current" ]; then
  printf '%s/current points at %s, which does not exist\n' "$1" "$link" >&2; exit 3
fi
printf '%s\n' "$sha"
"""

_RECEIVE_RELEASE = r"""root=$1 sha=$2 want=$3
dest=$root/releases/$sha tmp=$root/releases/$sha.partial
if [ -d "$dest" ]; then
  cat >/dev/null
  touch -- "$dest" || exit 5
  printf 'release %s already staged at %s\n' "$sha" "$dest"
  exit 0
fi
mkdir -p -- "$root/releases" || exit 5
rm -rf -- "$tmp" "$tmp.tar" || exit 5
cat >"$tmp.tar" || { rm -f -- "$tmp.tar"; exit 5; }
got=$(sha256sum <"$tmp.tar") || { rm -f -- "$tmp.tar"; exit 5; }
got=${got%% *}
if [ "$got" != "$want" ]; then
  rm -f -- "$tmp.tar"
  printf 'archive of %s arrived corrupt: sha256 %s, expected %s\n' "$sha" "$got" "$want" >&2
  exit 4
fi
if ! { mkdir -- "$tmp" && (cd -- "$tmp" && exec tar -x -f -) < "$tmp.tar"; }; then
  rm -rf -- "$tmp" "$tmp.tar"
  printf 'unpacking %s into %s failed\n' "$sha" "$tmp" >&2
  exit 5
fi
rm -f -- "$tmp.tar"
files=$(find "$tmp" -type f -printf . | wc -c)
if ! mv -T -- "$tmp" "$dest"; then
  rm -rf -- "$tmp"; printf 'cannot move %s to %s\n' "$tmp" "$dest" >&2; exit 5
fi
touch -- "$dest" || exit 5
printf 'staged %s at %s (%s files, sha256 %s)\n' "$sha" "$dest" "$files" "$got"
"""

_SWITCH_CURRENT = r"""root=$1 sha=$2
if [ ! -d "$root/releases/$sha" ]; then
  printf 'release %s is not staged at %s/releases/%s; refusing to switch\n' \
    "$sha" "$root" "$sha" >&2
  exit 3
fi
old=$(readlink -- "$root/current") || old=none
ln -sfn -- "releases/$sha" "$root/current.new" \
  && mv -T -- "$root/current.new" "$root/current" || exit 5
printf 'current -> releases/%s (was %s)\n' "$sha" "$old"
"""

_PRUNE_RELEASES = r"""root=$1 keep=$2
shift 2
dir=$root/releases
if [ ! -d "$dir" ]; then
  printf 'no releases directory at %s\n' "$dir" >&2; exit 3
fi
current=$(readlink -- "$root/current") || current=
current=${current%/}; current=${current##*/}
set -f
n=0 status=0
for name in $(ls -1t -- "$dir"); do
  case $name in *[!0-9a-f]*) continue ;; esac
  [ "${#name}" -eq 40 ] && [ -d "$dir/$name" ] || continue
  n=$((n + 1))
  why=
  if [ "$n" -le "$keep" ]; then why=newest; fi
  if [ "$name" = "$current" ]; then why=current; fi
  for protected in "$@"; do
    if [ "$name" = "$protected" ]; then why=protected; fi
  done
  if [ -n "$why" ]; then
    printf 'kept %s %s\n' "$name" "$why"
  elif rm -rf -- "$dir/$name"; then
    printf 'removed %s\n' "$name"
  else
    printf 'cannot remove %s/%s\n' "$dir" "$name" >&2; status=5
  fi
done
exit $status
"""

_FREE_DISK = r"""out=$(df -Pk -- "$1") || exit
printf '%s\n' "$out" | awk 'NR == 2 { print int($4 / 1024) }'
"""

SCRIPTS: Mapping[str, str] = MappingProxyType({
    "read_revision": _READ_REVISION,
    "receive_release": _RECEIVE_RELEASE,
    "switch_current": _SWITCH_CURRENT,
    "prune_releases": _PRUNE_RELEASES,
    "free_disk_mb": _FREE_DISK,
})
"""Every constant script of this module, by builder name (tests check commands use these)."""


# --- releases -----------------------------------------------------------------------------


def release_dir(app_root: str, sha: str) -> str:
    """``<app_root>/releases/<sha>``: where a revision's code is unpacked on a host."""
    return f"{_path('app root', app_root)}/releases/{check_sha(sha)}"


def read_revision(app_root: str) -> Command:
    """Print the sha ``<app_root>/current`` points at; exit 3 if it is missing or dangling."""
    return sh(_READ_REVISION, _path("app root", app_root),
              description="read the deployed revision")


def receive_release(app_root: str, sha: str, archive_sha256: str) -> Command:
    """Unpack the tar archive on stdin into ``releases/<sha>``, verified by its sha256.

    The archive is written to ``releases/<sha>.partial.tar`` and checked with
    ``sha256sum`` against ``archive_sha256`` (computed where it was made)
    before it is unpacked into ``releases/<sha>.partial``, which is then
    renamed to ``releases/<sha>``. A corrupt archive exits 4 and leaves
    nothing behind; a failed unpack exits 5. Idempotent: if ``releases/<sha>``
    exists, stdin is drained and the command exits 0 saying so.
    """
    if not isinstance(archive_sha256, str) or not _SHA256.fullmatch(archive_sha256):
        raise BadInput(f"archive checksum {archive_sha256!r} is not a sha256 hex digest")
    return sh(_RECEIVE_RELEASE, _path("app root", app_root), check_sha(sha), archive_sha256,
              description=f"receive release {sha}")


def switch_current(app_root: str, sha: str) -> Command:
    """Point ``current`` at ``releases/<sha>`` atomically (a new link renamed over it).

    Refuses (exit 3) when ``releases/<sha>`` does not exist.
    """
    return sh(_SWITCH_CURRENT, _path("app root", app_root), check_sha(sha),
              description=f"switch current to {sha}")


def prune_releases(app_root: str, keep: int, protect: Sequence[str] = ()) -> Command:
    """Remove releases but the newest ``keep`` (by mtime), ``current`` and ``protect``.

    Only directories named by a 40-hex sha are considered; ``.partial`` leftovers
    and anything else are left alone. Prints ``kept SHA WHY`` or ``removed SHA``
    per release.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise BadInput(f"releases to keep {keep!r} is not a non-negative integer")
    shas = tuple(dict.fromkeys(check_sha(s) for s in protect))
    return sh(_PRUNE_RELEASES, _path("app root", app_root), str(keep), *shas,
              description=f"prune releases to the newest {keep}")


_LIST_RELEASES = ('cd "$1/releases" 2>/dev/null || exit 0; '
                  "ls -1t | grep -E '^[0-9a-f]{40}$' || true")


def list_releases(app_root: str) -> Command:
    """Print the releases kept under ``<app_root>/releases``, newest (by mtime) first; only
    directories named by a 40-hex sha; nothing when there is no releases directory."""
    return sh(_LIST_RELEASES, _path("app root", app_root), description="list the releases")


def free_disk_mb(path: str) -> Command:
    """Print the MB available to unprivileged users on ``path``'s file system (``df -Pk``)."""
    return sh(_FREE_DISK, _path("path", path), description="measure free disk")


# --- services from the config's templates -------------------------------------------------


def _values(config: Config, host: HostSettings, **extra: str) -> dict[str, str]:
    return {"root": _path("app root", config.app_root(host)),
            "address": _value("host address", host.address),
            "host": _value("host name", host.name), **extra}


def app_start(config: Config, host: HostSettings, release: str, port: int) -> Command:
    """``[app] start`` for ``host``: run release ``release`` (a sha) on ``port``."""
    app: AppSettings = config.need("app")
    root = config.app_root(host)
    values = _values(config, host, release=release_dir(root, release),
                     port=str(check_port(port)))
    return _describe(template(app.start, **values), f"start {release} on port {port}")


def app_stop(config: Config, host: HostSettings, port: int) -> Command:
    """``[app] stop`` for ``host``: stop the instance on ``port``."""
    app: AppSettings = config.need("app")
    values = _values(config, host, port=str(check_port(port)))
    return _describe(template(app.stop, **values), f"stop the instance on port {port}")


def app_status(config: Config, host: HostSettings, port: int | None = None) -> Command:
    """``[app] status`` for ``host`` (``{port}`` is known only when ``port`` is given)."""
    app: AppSettings = config.need("app")
    extra = {} if port is None else {"port": str(check_port(port))}
    return _describe(template(app.status, **_values(config, host, **extra)),
                     "app instance status")


def scripts_start(config: Config, host: HostSettings, release: str | None = None) -> Command:
    """``[scripts] start`` for ``host``; ``{release}`` is ``releases/<release>`` or ``current``."""
    scripts: ScriptsSettings = config.need("scripts")
    root = config.app_root(host)
    where = f"{_path('app root', root)}/current" if release is None else release_dir(root, release)
    return _describe(template(scripts.start, **_values(config, host, release=where)),
                     f"start the scripts on {release or 'current'}")


def scripts_stop(config: Config, host: HostSettings) -> Command:
    """``[scripts] stop`` for ``host``."""
    scripts: ScriptsSettings = config.need("scripts")
    return _describe(template(scripts.stop, **_values(config, host)), "stop the scripts")


def scripts_status(config: Config, host: HostSettings) -> Command:
    """``[scripts] status`` for ``host``."""
    scripts: ScriptsSettings = config.need("scripts")
    return _describe(template(scripts.status, **_values(config, host)), "scripts status")


def _describe(command: Command, description: str) -> Command:
    return Command(command.argv, description)
