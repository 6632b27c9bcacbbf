"""One environment's settings, frozen and typed (SPEC section 5); :func:`load_config` reads
them from its TOML file (:mod:`orchestrator.config_loader` holds the reading and checks).

Validation is strict: an unknown key, a wrong type or a missing required value
raises :class:`~orchestrator.errors.ConfigError` naming the file and the dotted
key. Strings may use ``${NAME}`` or ``${NAME:-default}`` from the environment.
Local paths (``source.repo`` unless a URL, ``source.cache_dir``, ``ssh.key``,
``ssh.known_hosts``, ``database.passfile``) and remote paths (``app.root``, ``lb.admin_socket``,
per-host ``root``) that are relative are resolved against the config file's
directory, so a checked-in file can point into the project (the sandbox).
Passwords never come from the file: a DSN with a password is refused.

Every section but ``[source]`` may be absent; a command that needs one asks
with :meth:`Config.need`, which names the missing section.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, overload

from orchestrator.errors import ConfigError
from orchestrator.history.checkout import is_url

if TYPE_CHECKING:
    from orchestrator.history.checkout import Checkout

ROLES = ("app", "scripts", "lb")
_PATH = {"path": True}
MAX_SECONDS = 2_147_483
"""The most seconds a timeout or budget may be: PostgreSQL's statement_timeout holds at most
2,147,483,647 ms, and the window's deadline becomes one."""


@dataclass(frozen=True)
class SourceSettings:
    """``[source]``: where the code and the patches come from (see
    :mod:`orchestrator.history.checkout` for how a URL or a remote is fetched)."""

    repo: str = field(default=".", metadata=_PATH)
    """A local path (relative to the config file) or a URL (``https://``, ``ssh://``,
    ``file://``, ``user@host:path``): a URL is fetched into a mirror before every plan."""
    branch: str = "db-stable"
    patches: str = "database/schema/patch-*.sql"
    schema_files: tuple[str, ...] = ("database/schema/**",)
    permissions: str | None = None
    """Repository path of the permissions SQL run in the cold-patch transaction."""
    tag_cuts: bool = True
    """Tag each committed cut ``fastdowntime/<run id>`` in the repository read (a URL's
    mirror, where the tags stay across fetches); pushing them is the user's choice."""
    fetch: str | None = None
    """For a local ``repo``: a remote to fetch before planning (``origin``); the branch is
    then planned as that remote has it (``refs/remotes/<fetch>/<branch>``), never from the
    working tree or a local branch. None: the repository is read as it stands."""
    cache_dir: str | None = field(default=None, metadata=_PATH)
    """Where the mirrors of URLs and the fetch locks are kept; None:
    ``$XDG_CACHE_HOME/fastdowntime``, else ``~/.cache/fastdowntime``."""
    fetch_timeout_s: float = 300.0
    """The longest a fetch may take; and, apart, the longest to wait for another
    process's fetch of the same repository."""


@dataclass(frozen=True)
class DatabaseSettings:
    """``[database]``: the primary, pgbouncer, thresholds and user lists."""

    dsn: str
    pgbouncer_admin_dsn: str | None = None
    passfile: str | None = field(default=None, metadata=_PATH)
    revision_table: str = "LaunchpadDatabaseRevision"
    standbys: int = 0
    max_replay_lag_s: float = 60.0
    max_transaction_age_s: float = 60.0
    long_transaction_users: tuple[str, ...] = ()
    system_users: tuple[str, ...] = ("postgres",)
    fragile_users: tuple[str, ...] = ()
    standby_dsns: tuple[str, ...] = ()
    """Direct connections to the standbys, for exact replay positions (optional)."""
    timings_dsn: str | None = None
    """Where rehearsal timings are read from (the staging database); default: ``dsn``."""
    timings_file: str | None = field(default=None, metadata=_PATH)
    """Or a file exported by ``fastdowntime timings --json`` (instead of a database)."""
    connect_timeout_s: float = 5.0
    lock_timeout_s: float = 1.0
    live_retries: int = 5
    live_backoff_s: float = 0.5
    """First delay between live-statement retries; doubles each time (tenacity)."""
    terminate_deadline_s: float = 5.0
    """How long cutting connections may take before the window fails."""
    cut_method: str = "pause"
    """With pgbouncer: ``pause`` (clients stay connected and wait; pgbouncer closes its
    server connections once their transactions end) or ``kill`` (DISABLE + KILL: clients
    are dropped and must reconnect)."""
    replay_timeout_s: float = 30.0


@dataclass(frozen=True)
class WindowSettings:
    """``[window]``: the outage budget and the per-patch staging budget."""

    budget_s: float = 30.0
    patch_budget_s: float = 15.0
    mode: str = "hold"
    """``hold``: haproxy keeps routing and pgbouncer PAUSE holds the users' queries while
    the cold patches run, so requests wait and none fails. ``drain``: the old instances
    drain in haproxy and users get no answer from the app during the window."""
    rehearsal_trials: int = 2
    """A rehearsal first runs its cold transaction this many times and rolls it back,
    before its window; each patch's recorded timing is the median of the trials and the
    window (one run on a busy staging machine is off by a quarter either way)."""

    HOLD_MARGIN_S: ClassVar[float] = 2.0
    """Beyond the budget, what a held request needs for its own work."""

    @property
    def hold_needs_s(self) -> float:
        """How long a request must be allowed to wait in hold mode: budget plus margin."""
        return self.budget_s + self.HOLD_MARGIN_S


@dataclass(frozen=True)
class SshSettings:
    """``[ssh]``: how to reach every host.

    ``user``, ``key``, ``port`` and ``proxy_jump`` left out here (and on the host) come
    from the operator's ssh_config, then from the defaults: see
    :mod:`orchestrator.remote.endpoints`. Host keys never do: only ``known_hosts``.
    """

    known_hosts: str = field(metadata=_PATH)
    user: str | None = None
    """Login user; unset: ssh_config's ``User``, else ``deploy``."""
    key: str | None = field(default=None, metadata=_PATH)
    """Private key; unset: ssh_config's ``IdentityFile``, else the agent and ~/.ssh."""
    port: int | None = None
    """sshd port of every host; unset: ssh_config's ``Port``, else 22."""
    ssh_config: str | None = field(default=None, metadata=_PATH)
    """The OpenSSH client config read for what this file leaves out; unset:
    ``~/.ssh/config`` (when it exists); ``""``: none."""
    proxy_jump: str | None = None
    """``[user@]host[:port]`` (comma-separated for several hops) every host is reached
    through; unset: ssh_config's ``ProxyJump``; ``""`` or ``"none"``: direct."""
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 60.0
    parallelism: int = 16
    connect_retries: int = 3


@dataclass(frozen=True)
class HostSettings:
    """``[hosts.<role>.<name>]``: one host of the inventory."""

    name: str
    role: str
    address: str
    """Address or name to connect to (a ``Host`` alias of ssh_config works too)."""
    port: int | None = None
    """sshd port; ``None``: ``[ssh] port``, ssh_config's ``Port``, 22 (the loader fills in
    ``[ssh] port``)."""
    root: str | None = field(default=None, metadata=_PATH)
    """Per-host app root; ``None`` means ``[app] root``."""
    user: str | None = None
    """Login user for this host, over ``[ssh] user``."""
    key: str | None = field(default=None, metadata=_PATH)
    """Private key for this host, over ``[ssh] key``."""
    proxy_jump: str | None = None
    """Jump host(s) for this host, over ``[ssh] proxy_jump`` (``""``: direct)."""


@dataclass(frozen=True)
class LbSettings:
    """``[lb]``: haproxy on the LB host, and the address users reach."""

    admin_socket: str = field(metadata=_PATH)
    public_url: str
    backend: str = "app"
    server_name: str = "{host}_{port}"
    drain_timeout_s: float = 10.0
    haproxy_config: str | None = field(default=None, metadata=_PATH)
    """haproxy's configuration file on the LB host: hold mode reads its ``timeout server``
    and ``timeout queue`` from it (over SSH)."""
    timeout_server_s: float | None = None
    """haproxy's ``timeout server``, where its configuration cannot be read."""
    timeout_queue_s: float | None = None
    """haproxy's ``timeout queue`` (haproxy uses ``timeout connect`` when unset), likewise."""


@dataclass(frozen=True)
class AppSettings:
    """``[app]``: the application service; commands are argv lists with placeholders.

    Placeholders: ``{root}`` (app root), ``{release}`` (release directory),
    ``{port}``, ``{address}``, ``{host}``.
    """

    start: tuple[str, ...]
    stop: tuple[str, ...]
    status: tuple[str, ...]
    root: str = field(default="/srv/app", metadata=_PATH)
    health_url: str = "http://{address}:{port}/+health"
    ports: tuple[int, ...] = (8001, 8002)
    health_timeout_s: float = 10.0
    stop_timeout_s: float = 10.0
    keep_releases: int = 5
    min_free_mb: int = 100
    pool_wait_s: float | None = None
    """How long a request of the app waits for a free database connection of its pool
    before it fails (hold mode checks it outlasts the window); None: not known."""


@dataclass(frozen=True)
class ScriptsSettings:
    """``[scripts]``: the fragile scripts, stopped before and started after the window."""

    start: tuple[str, ...]
    stop: tuple[str, ...]
    status: tuple[str, ...]


@dataclass(frozen=True)
class NodowntimeSettings:
    """``[nodowntime]``: the rolling stage."""

    batch_size: int = 1
    max_out_of_rotation: int = 1


@dataclass(frozen=True)
class RunsSettings:
    """``[runs]``: where each run's journal and summary are kept."""

    dir: str = field(default="~/.local/state/fastdowntime/runs", metadata=_PATH)
    playbook: str = "fastdowntime"
    """The fastdowntime playbook: ``fastdowntime`` or ``fastdowntime-restart`` (or a path)."""


HOOK_EVENTS = ("before_window", "after_window", "on_failure", "on_done")
"""The points of a run where ``[hooks]`` commands run and the webhook is told."""


@dataclass(frozen=True)
class HooksSettings:
    """``[hooks]``: commands run on the orchestrator host at points of a run, and a webhook
    told of the same events (see ``docs/hooks.md``).

    Each command is an argv list (no shell), run in the config file's directory with the
    run's facts in ``FASTDOWNTIME_*`` environment variables. A failing ``before_window``
    command refuses the deploy (exit 3, nothing changed yet); every other failure, and
    every webhook failure, only warns.
    """

    before_window: tuple[str, ...] | None = None
    """Right before the fastdowntime stage's steps (after preflight and the lock)."""
    after_window: tuple[str, ...] | None = None
    """Once the fastdowntime stage's steps ended: the window closed (committed or rolled
    back) or never opened."""
    on_failure: tuple[str, ...] | None = None
    """When the run ends with an error outcome (any exit code but 0)."""
    on_done: tuple[str, ...] | None = None
    """When the run ends done (exit 0)."""
    timeout_s: float = 30.0
    """Each command is killed (with the processes it started) after this long."""
    webhook_url: str | None = None
    """An http(s) URL that receives every event as a JSON POST."""
    webhook_timeout_s: float = 5.0
    """Per attempt: connecting, sending, and each wait for the answer."""
    webhook_retries: int = 2
    """Attempts after the first, with exponential backoff, on a connection error, a
    timeout, or an answer 408, 429 or 5xx."""


@dataclass(frozen=True)
class Config:
    """One environment. ``path`` is the file it came from (None: built-in defaults)."""

    path: Path | None
    source: SourceSettings = SourceSettings()
    database: DatabaseSettings | None = None
    window: WindowSettings = WindowSettings()
    ssh: SshSettings | None = None
    hosts: tuple[HostSettings, ...] = ()
    lb: LbSettings | None = None
    app: AppSettings | None = None
    scripts: ScriptsSettings | None = None
    nodowntime: NodowntimeSettings = NodowntimeSettings()
    runs: RunsSettings = RunsSettings()
    hooks: HooksSettings = HooksSettings()
    checkout: Checkout | None = None
    """Not a section: where this command reads git, once ``[source]`` was fetched
    (:func:`orchestrator.runner.planning.checked_out`)."""

    @property
    def repository(self) -> str:
        """The local repository this command reads git from: the checkout's (a URL's
        mirror), else ``[source] repo`` (a local path, read as it stands)."""
        if self.checkout is not None:
            return self.checkout.path
        if is_url(self.source.repo):
            raise RuntimeError(f"{self.source.repo}: read before it was fetched "
                               "(checked_out first)")
        return self.source.repo

    @overload
    def need(self, section: Literal["database"]) -> DatabaseSettings: ...
    @overload
    def need(self, section: Literal["ssh"]) -> SshSettings: ...
    @overload
    def need(self, section: Literal["lb"]) -> LbSettings: ...
    @overload
    def need(self, section: Literal["app"]) -> AppSettings: ...
    @overload
    def need(self, section: Literal["scripts"]) -> ScriptsSettings: ...
    @overload
    def need(self, section: Literal["hosts"]) -> tuple[HostSettings, ...]: ...

    def need(self, section: str) -> object:
        """The settings of ``section`` (typed per section), or a ConfigError saying the file
        lacks it."""
        value = getattr(self, section)
        if value is None or value == ():
            raise ConfigError(str(self.path or "<no config file>"), f"[{section}]",
                              "this command needs the section, and it is missing")
        return value

    def role(self, role: str) -> tuple[HostSettings, ...]:
        """The hosts of one role, in file order."""
        return tuple(h for h in self.hosts if h.role == role)

    def app_root(self, host: HostSettings) -> str:
        """The app root on ``host``: its own ``root`` or ``[app] root``."""
        return host.root or self.need("app").root


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate ``path``; ``None`` gives the built-in defaults (no sections). The
    reading and checking is :mod:`orchestrator.config_loader`'s."""
    from orchestrator.config_loader import load

    return load(path)


def check_private_file(path: str, key: str, where: str | None = None) -> None:
    """Refuse a file another user may write (a private key, known_hosts, a pgpass file):
    whoever can write it can log in as us, or make us trust their host. ConfigError naming
    ``key``; a missing file is left to the code that reads it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(where or path, key, f"cannot read {path}: {exc}") from None
    if mode & 0o022:
        raise ConfigError(where or path, key, f"{path} is writable by group or others "
                                              f"(mode {mode & 0o777:o}): chmod go-w it")


_HOP = re.compile(r"(?:[^@\s,:]+@)?[^@\s,:]+(?::(?P<port>\d+))?")


def jump_problem(value: str) -> str | None:
    """What is wrong with a ``proxy_jump`` value, or None: ``""`` or ``none`` (direct), or
    ``[user@]host[:port]`` hops separated by commas, as OpenSSH's ProxyJump (an IPv6 jump
    host needs an ssh_config ``Host`` alias: its colons cannot be told from the port's)."""
    if value.strip().lower() in ("", "none"):
        return None
    for hop in value.split(","):
        match = _HOP.fullmatch(hop.strip())
        if match is None:
            return (f"{hop.strip()!r} is not a jump host: write [user@]host[:port], "
                    "several separated by commas (an IPv6 address: a Host alias of "
                    "ssh_config)")
        if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
            return f"{match['port']} is not a port (1-65535)"
    return None
