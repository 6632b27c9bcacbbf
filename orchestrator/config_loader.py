"""Reading one environment's TOML file into :class:`~orchestrator.config.Config`, and every
check of its values (the settings themselves are :mod:`orchestrator.config`'s).

Validation is strict: an unknown key, a wrong type or a missing required value raises
:class:`~orchestrator.errors.ConfigError` naming the file and the dotted key; ``${NAME}``
and ``${NAME:-default}`` come from the environment; relative local paths are resolved
against the file's directory.
"""

from __future__ import annotations

import math
import os
import re
import string
import tomllib
import types
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import psycopg2.extensions

from orchestrator.config import (
    HOOK_EVENTS,
    MAX_SECONDS,
    ROLES,
    AppSettings,
    Config,
    DatabaseSettings,
    HooksSettings,
    HostSettings,
    LbSettings,
    NodowntimeSettings,
    RunsSettings,
    ScriptsSettings,
    SourceSettings,
    SshSettings,
    WindowSettings,
    jump_problem,
)
from orchestrator.errors import ConfigError
from orchestrator.history.checkout import REMOTE_NAME, is_url

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
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



def load(path: str | os.PathLike[str] | None) -> Config:
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
        if config.window.rehearsal_trials < 0:
            raise self.error("window.rehearsal_trials", "must be 0 (time the window alone) or "
                             "more")
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




def _tname(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
