"""Load one environment's TOML file into frozen, typed settings (SPEC section 5).

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

import math
import os
import re
import string
import tomllib
import types
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    overload,
)

import psycopg2.extensions

from orchestrator.errors import ConfigError
from orchestrator.history.checkout import REMOTE_NAME, is_url

if TYPE_CHECKING:
    from orchestrator.history.checkout import Checkout

ROLES = ("app", "scripts", "lb")
_PATH = {"path": True}
MAX_SECONDS = 2_147_483
"""The most seconds a timeout or budget may be: PostgreSQL's statement_timeout holds at most
2,147,483,647 ms, and the window's deadline becomes one."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


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


_SECTIONS: dict[str, type] = {
    "source": SourceSettings,
    "database": DatabaseSettings,
    "window": WindowSettings,
    "ssh": SshSettings,
    "lb": LbSettings,
    "app": AppSettings,
    "scripts": ScriptsSettings,
    "nodowntime": NodowntimeSettings,
    "runs": RunsSettings,
    "hooks": HooksSettings,
}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate ``path``; ``None`` gives the built-in defaults (no sections)."""
    if path is None:
        return Config(path=None)
    file = Path(path)
    where = str(file)
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(where, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, None, f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, None, f"not valid TOML: {exc}") from None
    return _Loader(file).config(raw)


class _Loader:
    def __init__(self, file: Path) -> None:
        self.file = file
        self.where = str(file)
        self.base = file.resolve().parent

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.where, key, problem)

    def config(self, raw: dict[str, Any]) -> Config:
        values: dict[str, Any] = {}
        for name, section in raw.items():
            if name == "hosts":
                values["hosts"] = self.hosts(section, raw.get("ssh", {}))
            elif name in _SECTIONS:
                if not isinstance(section, dict):
                    raise self.error(name, "must be a table")
                values[name] = self.build(_SECTIONS[name], section, name)
            else:
                known = ", ".join([*_SECTIONS, "hosts"])
                raise self.error(name, f"unknown section (known: {known})")
        config = Config(path=self.file, **values)
        self.check(config)
        return config

    def hosts(self, section: Any, ssh: Any) -> tuple[HostSettings, ...]:
        if not isinstance(section, dict):
            raise self.error("hosts", "must be a table of roles")
        default_port = ssh.get("port") if isinstance(ssh, dict) else None
        seen: set[str] = set()
        hosts = []
        for role, members in section.items():
            if role not in ROLES:
                raise self.error(f"hosts.{role}", f"unknown role (known: {', '.join(ROLES)})")
            if not isinstance(members, dict) or not members:
                raise self.error(f"hosts.{role}", "must hold one table per host")
            for name, table in members.items():
                key = f"hosts.{role}.{name}"
                if name in seen:
                    raise self.error(key, "host name used twice")
                seen.add(name)
                if not isinstance(table, dict):
                    raise self.error(key, "must be a table")
                defaults = {"port": default_port} if default_port is not None else {}
                table = {**defaults, **table, "name": name, "role": role}
                hosts.append(self.build(HostSettings, table, key))
        return tuple(hosts)

    def build(self, cls: type, table: dict[str, Any], prefix: str) -> Any:
        hints = get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}
        for key in table:
            if key not in known:
                raise self.error(f"{prefix}.{key}", f"unknown key (known: {', '.join(known)})")
        values = {}
        for name, spec in known.items():
            key = f"{prefix}.{name}"
            if name not in table:
                if spec.default is MISSING and spec.default_factory is MISSING:
                    raise self.error(key, "required, and missing")
                continue
            value = self.convert(hints[name], table[name], key)
            if spec.metadata.get("path") and value is not None:
                value = self.resolve(value)
            values[name] = value
        return cls(**values)

    def convert(self, hint: Any, value: Any, key: str) -> Any:
        origin, args = get_origin(hint), get_args(hint)
        if origin in (Union, types.UnionType):
            inner = [a for a in args if a is not type(None)][0]
            return self.convert(inner, value, key)
        if origin is tuple:
            if not isinstance(value, list):
                raise self.error(key, f"must be a list, not {_tname(value)}")
            return tuple(self.convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(key, f"must be a number, not {_tname(value)}")
            if not math.isfinite(value):
                raise self.error(key, f"must be a finite number, not {value}")
            if value < 0:
                raise self.error(key, "must not be negative")
            if value > MAX_SECONDS:
                raise self.error(key, f"must be at most {MAX_SECONDS:,} (what PostgreSQL's "
                                      "statement_timeout can hold)")
            return float(value)
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(key, f"must be an integer, not {_tname(value)}")
            if value < 0:
                raise self.error(key, "must not be negative")
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise self.error(key, f"must be true or false, not {_tname(value)}")
            return value
        if hint is str:
            if not isinstance(value, str):
                raise self.error(key, f"must be a string, not {_tname(value)}")
            return self.expand(value, key)
        raise TypeError(f"no converter for {hint!r}")  # a programming error, not bad input

    def expand(self, value: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise self.error(key, f"${{{name}}} is not set in the environment")

        return _ENV.sub(substitute, value)

    def resolve(self, value: str) -> str:
        if not value or is_url(value):  # "" stays "" (``ssh_config = ""``: none)
            return value
        return os.path.normpath(self.base / os.path.expanduser(value))

    def check(self, config: Config) -> None:
        self.check_values(config)
        self.check_source(config.source)
        for name in ("dsn", "pgbouncer_admin_dsn", "timings_dsn"):
            dsn = getattr(config.database, name, None)
            if dsn is not None:
                self.check_dsn(f"database.{name}", dsn)
        if config.database and config.database.cut_method not in ("pause", "kill"):
            raise self.error("database.cut_method", "must be pause or kill")
        if config.window.mode not in ("hold", "drain"):
            raise self.error("window.mode", "must be hold (requests wait) or drain "
                             "(requests are turned away)")
        for i, dsn in enumerate(config.database.standby_dsns if config.database else ()):
            self.check_dsn(f"database.standby_dsns[{i}]", dsn)
        if config.app and len(config.app.ports) != 2:
            raise self.error("app.ports", "must name exactly two instance ports (old and new)")
        if config.lb and not config.role("lb"):
            raise self.error("hosts.lb", "[lb] is configured but no host has the role lb")
        if config.ssh and config.ssh.parallelism < 1:
            raise self.error("ssh.parallelism", "must be at least 1")
        jumps = [("ssh.proxy_jump", config.ssh.proxy_jump)] if config.ssh else []
        jumps += [(f"hosts.{h.role}.{h.name}.proxy_jump", h.proxy_jump) for h in config.hosts]
        for key, jump in jumps:
            problem = jump_problem(jump) if jump is not None else None
            if problem:
                raise self.error(key, problem)
        nodowntime = config.nodowntime
        if nodowntime.batch_size < 1 or nodowntime.max_out_of_rotation < nodowntime.batch_size:
            raise self.error("nodowntime.batch_size",
                             "must be at least 1 and at most nodowntime.max_out_of_rotation")

    def check_source(self, source: SourceSettings) -> None:
        if source.repo.startswith("-"):
            raise self.error("source.repo", "must be a path or a URL, not an option")
        if source.fetch is None:
            return
        if is_url(source.repo):
            raise self.error("source.fetch", "is for a local repo: a URL is always fetched, "
                             "into its own mirror under source.cache_dir")
        if not REMOTE_NAME.fullmatch(source.fetch):
            raise self.error("source.fetch", f"{source.fetch!r} is not the name of a remote "
                             "(such as origin)")

    def check_dsn(self, key: str, dsn: str) -> None:
        try:
            params = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError as exc:
            raise self.error(key, f"not a valid libpq connection string: {exc}") from None
        if "password" in params:
            raise self.error(key, "must not hold a password; use the environment "
                                  "(PGPASSWORD) or a pgpass file (database.passfile)")
        if not (params.get("host") or params.get("hostaddr") or params.get("service")):
            raise self.error(key, "must name the server (host=..., or a socket directory): "
                                  "libpq's default would be whatever server runs here")

    def check_values(self, config: Config) -> None:
        """What a type cannot say: timeouts and budgets above zero, ports in range and
        distinct, URLs and templates that work, a revision table that is an identifier, hook
        commands that name a program."""
        sections = [(name, getattr(config, name)) for name in _SECTIONS]
        for section, settings in sections:
            for spec in fields(settings) if settings is not None else ():
                value = getattr(settings, spec.name)
                if (spec.name.endswith(("timeout_s", "budget_s", "deadline_s"))
                        and value is not None and value <= 0):
                    raise self.error(f"{section}.{spec.name}", "must be more than 0 (a zero "
                                     "timeout would wait forever or never)")
        given = [("ssh.port", config.ssh.port)] if config.ssh else []
        given += [(f"hosts.{h.role}.{h.name}.port", h.port) for h in config.hosts]
        ports = [(key, port) for key, port in given if port is not None]
        app_ports = config.app.ports if config.app else ()
        ports += [(f"app.ports[{i}]", port) for i, port in enumerate(app_ports)]
        for key, port in ports:
            if not 1 <= port <= 65535:
                raise self.error(key, f"{port} is not a port (1-65535)")
        if len(set(app_ports)) != len(app_ports):
            raise self.error("app.ports", "the two instance ports must differ")
        if config.lb is not None:
            if not re.match(r"https?://[^/\s]+", config.lb.public_url):
                raise self.error("lb.public_url", "must be an http:// or https:// URL")
            self.check_template("lb.server_name", config.lb.server_name, {"host", "port"})
        if config.app is not None:
            self.check_template("app.health_url", config.app.health_url,
                                {"address", "port", "host"})
        for event in HOOK_EVENTS:
            argv = getattr(config.hooks, event)
            if argv is not None and (not argv or not argv[0]):
                raise self.error(f"hooks.{event}", "must name a command: a non-empty argv "
                                 'list such as ["./notify", "--channel", "ops"]')
        webhook = config.hooks.webhook_url
        if webhook is not None and not re.match(r"https?://[^/\s?#]+(?:[/?#]\S*)?$", webhook):
            raise self.error("hooks.webhook_url", "must be an http:// or https:// URL")
        if config.hooks.webhook_retries > 10:
            raise self.error("hooks.webhook_retries", "must be at most 10 (a webhook that is "
                             "down would hold the run for minutes)")
        if config.database is not None and not _IDENTIFIER.fullmatch(
                config.database.revision_table):
            raise self.error("database.revision_table",
                             f"{config.database.revision_table!r} is not a plain identifier "
                             "(letters, digits and _, optionally schema.table)")

    def check_template(self, key: str, template: str, known: set[str]) -> None:
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(template)
                    if name is not None}
        except ValueError as exc:
            raise self.error(key, f"not a valid template: {exc}") from None
        unknown = used - known
        if unknown:
            raise self.error(key, f"unknown field {{{sorted(unknown)[0]}}} (known: "
                                  f"{', '.join('{' + k + '}' for k in sorted(known))})")


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


def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
