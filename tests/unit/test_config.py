"""Loading a config file: strict validation, errors that name file and key, no passwords."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import load_config
from orchestrator.errors import ConfigError, ExitCode
from orchestrator.sandbox.configfile import CHECKED_IN_BASE, render_config
from orchestrator.sandbox.layout import PROJECT_ROOT, Layout

MINIMAL = """
[database]
dsn = "host=db.example port=5432 dbname=app user=deployer"

[ssh]
known_hosts = "known_hosts"

[hosts.app.web1]
address = "10.0.0.1"

[app]
start = ["appctl", "start", "{release}", "{port}"]
stop = ["appctl", "stop", "{port}"]
status = ["appctl", "status"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env.toml"
    path.write_text(text)
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    """A minimal file loads, with Launchpad's defaults for everything it leaves out."""
    config = load_config(write(tmp_path, MINIMAL))
    assert config.window.budget_s == 30.0
    assert config.window.patch_budget_s == 15.0
    assert config.database.max_replay_lag_s == 60.0
    assert config.source.branch == "db-stable"
    assert config.hosts[0].port is None and config.hosts[0].role == "app"  # ssh_config, or 22
    assert config.ssh.known_hosts == str(tmp_path / "known_hosts")


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    """An unknown key is an error naming the file and the dotted key."""
    err = error_for(tmp_path, MINIMAL + "\n[window]\nbudget = 30\n")
    assert err.key == "window.budget"
    assert str(tmp_path / "env.toml") in str(err) and "unknown key" in str(err)


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    """A misspelt section is an error, not silently ignored."""
    assert error_for(tmp_path, MINIMAL + "\n[windoe]\nbudget_s = 3\n").key == "windoe"


def test_wrong_type_names_key(tmp_path: Path) -> None:
    """A string where a number belongs names the key and both types."""
    err = error_for(tmp_path, MINIMAL + '\n[window]\nbudget_s = "30"\n')
    assert err.key == "window.budget_s" and "number" in err.problem


def test_bool_is_not_an_integer(tmp_path: Path) -> None:
    """TOML booleans are not accepted where an integer belongs."""
    err = error_for(tmp_path, MINIMAL + "\n[nodowntime]\nbatch_size = true\n")
    assert err.key == "nodowntime.batch_size"


def test_missing_required_value(tmp_path: Path) -> None:
    """A required key that is absent is named."""
    err = error_for(tmp_path, MINIMAL.replace('dsn = "host=db.example port=5432 '
                                              'dbname=app user=deployer"', ""))
    assert err.key == "database.dsn" and "required" in err.problem


def test_password_in_dsn_is_refused(tmp_path: Path) -> None:
    """Passwords never come from the file."""
    err = error_for(tmp_path, MINIMAL.replace("user=deployer", "user=deployer password=s3cret"))
    assert err.key == "database.dsn" and "password" in err.problem
    assert "s3cret" not in str(err)


def test_unknown_role_and_duplicate_host(tmp_path: Path) -> None:
    """Host roles are app, scripts and lb; a host name is used once."""
    assert error_for(tmp_path, MINIMAL + '\n[hosts.db.x]\naddress = "1"\n').key == "hosts.db"
    err = error_for(tmp_path, MINIMAL + '\n[hosts.scripts.web1]\naddress = "1"\n')
    assert err.key == "hosts.scripts.web1"


def test_environment_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${NAME} and ${NAME:-default} expand; an unset name without default is an error."""
    monkeypatch.setenv("FDT_TEST_HOST", "db.internal")
    text = MINIMAL.replace("db.example", "${FDT_TEST_HOST}")
    assert "host=db.internal" in load_config(write(tmp_path, text)).database.dsn
    text = MINIMAL.replace('"known_hosts"', '"${FDT_UNSET_VAR:-/etc/ssh/kh}"')
    assert load_config(write(tmp_path, text)).ssh.known_hosts == "/etc/ssh/kh"
    err = error_for(tmp_path, MINIMAL.replace('"known_hosts"', '"${FDT_UNSET_VAR}"'))
    assert err.key == "ssh.known_hosts" and "FDT_UNSET_VAR" in err.problem


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    """Syntax errors and missing files are ConfigErrors naming the file."""
    assert "not valid TOML" in str(error_for(tmp_path, "[database\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_cli_exit_code_two_for_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          ) -> None:
    """A bad config file makes the command exit 2 with the key in the message."""
    path = write(tmp_path, MINIMAL + "\n[window]\nbudget_s = -1\n")
    from orchestrator.cliparser import build_parser
    from orchestrator.commands.loading import load

    args = build_parser().parse_args(["-c", str(path), "sandbox", "status"])
    with pytest.raises(ConfigError) as caught:
        load(args)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert main(["sandbox", "status", "--hosts", "0"]) == ExitCode.BAD_INPUT
    assert "--hosts" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sandbox.toml", "staging.example.toml",
                                  "production.example.toml"])
def test_checked_in_configs_load(name: str) -> None:
    """Every config file in config/ is valid."""
    config = load_config(PROJECT_ROOT / "config" / name)
    assert config.database is not None and config.hosts


def test_sandbox_config_matches_layout() -> None:
    """config/sandbox.toml is exactly the rendering of the default sandbox layout."""
    checked_in = (PROJECT_ROOT / "config" / "sandbox.toml").read_text()
    assert checked_in == render_config(Layout(PROJECT_ROOT / ".sandbox"), CHECKED_IN_BASE)


LB = """
[hosts.lb.lb1]
address = "10.0.0.9"

[lb]
admin_socket = "/run/haproxy/admin.sock"
public_url = "http://www.example/"
"""


@pytest.mark.parametrize(("extra", "key", "says"), [
    ("\n[window]\nbudget_s = nan\n", "window.budget_s", "finite"),
    ("\n[window]\nbudget_s = inf\n", "window.budget_s", "finite"),
    ("\n[window]\nbudget_s = 3000000\n", "window.budget_s", "statement_timeout"),
    ("\n[window]\nbudget_s = 0\n", "window.budget_s", "more than 0"),
], ids=["nan", "inf", "too-big", "zero-budget"])
def test_numbers_that_would_fail_inside_the_window(tmp_path: Path, extra: str, key: str,
                                                   says: str) -> None:
    """NaN, infinity, more than statement_timeout holds, zero: refused at load, naming the
    key (exit 2), never found inside the window."""
    err = error_for(tmp_path, MINIMAL + extra)
    assert err.key == key and says in str(err)
    assert err.exit_code == ExitCode.BAD_INPUT


def test_zero_command_timeout_is_refused(tmp_path: Path) -> None:
    """command_timeout_s = 0 would turn off the remote kill: refused."""
    text = MINIMAL.replace('known_hosts = "known_hosts"',
                           'known_hosts = "known_hosts"\ncommand_timeout_s = 0')
    assert error_for(tmp_path, text).key == "ssh.command_timeout_s"


@pytest.mark.parametrize(("old", "new", "key"), [
    ('address = "10.0.0.1"', 'address = "10.0.0.1"\nport = 70000', "hosts.app.web1.port"),
    ('address = "10.0.0.1"', 'address = "10.0.0.1"\nport = 0', "hosts.app.web1.port"),
    ('status = ["appctl", "status"]', 'status = ["appctl", "status"]\nports = [8001, 8001]',
     "app.ports"),
    ("host=db.example port=5432 ", "port=5432 ", "database.dsn"),
    ('status = ["appctl", "status"]',
     'status = ["appctl", "status"]\nhealth_url = "http://{addr}:{port}/"', "app.health_url"),
    ('dsn = "host', 'revision_table = "bad-name; DROP"\ndsn = "host', "database.revision_table"),
])
def test_values_that_fail_later_are_refused_now(tmp_path: Path, old: str, new: str,
                                                key: str) -> None:
    """Ports out of range or repeated, a DSN without a host, a template with an unknown field,
    a revision table that is not an identifier: each refused at load, naming its key."""
    assert error_for(tmp_path, MINIMAL.replace(old, new, 1)).key == key


def test_negative_rehearsal_trials_are_refused(tmp_path: Path) -> None:
    """0 trials times the window alone; fewer is a mistake, named."""
    error = error_for(tmp_path, MINIMAL + "\n[window]\nrehearsal_trials = -1\n")
    assert error.key == "window.rehearsal_trials" and "0" in str(error)


@pytest.mark.parametrize(("old", "new", "key"), [
    ('public_url = "http://www.example/"', 'public_url = "ftp://www.example/"',
     "lb.public_url"),
    ('public_url = "http://www.example/"',
     'public_url = "http://www.example/"\nserver_name = "{host}-{slot}"', "lb.server_name"),
])
def test_lb_values_are_checked(tmp_path: Path, old: str, new: str, key: str) -> None:
    """A public URL that is not http(s), a server name template with an unknown field."""
    assert error_for(tmp_path, MINIMAL + LB.replace(old, new, 1)).key == key


def test_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    """A key, known_hosts or pgpass file writable by group or others is refused by name."""
    from orchestrator.config import check_private_file

    secret = tmp_path / "pgpass"
    secret.write_text("*:*:*:*:x\n")
    secret.chmod(0o600)
    check_private_file(str(secret), "database.passfile")
    secret.chmod(0o620)
    with pytest.raises(ConfigError) as caught:
        check_private_file(str(secret), "database.passfile")
    assert caught.value.key == "database.passfile" and "chmod go-w" in str(caught.value)
    check_private_file(str(tmp_path / "missing"), "ssh.key")


def test_ssh_refuses_a_known_hosts_others_may_write(tmp_path: Path) -> None:
    """A known_hosts file others may write would let them make us trust their host: the SSH
    layer refuses it before connecting anywhere."""
    from orchestrator.remote.ssh import Remote

    known = tmp_path / "known_hosts"
    known.write_text("")
    known.chmod(0o666)
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError) as caught:
        Remote(config)
    assert caught.value.key == "ssh.known_hosts"
    known.chmod(0o644)
    Remote(config).close()


def test_hooks_default_to_none_and_load_as_argv(tmp_path: Path) -> None:
    """[hooks] is optional (no command, no webhook, 30 s each); commands load as argv tuples
    and ${NAME} in the webhook URL comes from the environment."""
    assert load_config(write(tmp_path, MINIMAL)).hooks.before_window is None
    assert load_config(write(tmp_path, MINIMAL)).hooks.timeout_s == 30.0
    text = MINIMAL + ('\n[hooks]\nbefore_window = ["./notify", "before"]\n'
                      'on_done = ["sh", "-c", "echo $FASTDOWNTIME_RUN_ID"]\ntimeout_s = 5\n'
                      'webhook_url = "${FDT_UNSET_WEBHOOK:-http://chat.example/hook}"\n')
    hooks = load_config(write(tmp_path, text)).hooks
    assert hooks.before_window == ("./notify", "before") and hooks.after_window is None
    assert hooks.on_done == ("sh", "-c", "echo $FASTDOWNTIME_RUN_ID")
    assert hooks.timeout_s == 5.0 and hooks.webhook_url == "http://chat.example/hook"


@pytest.mark.parametrize(("hooks", "key"), [
    ("before_window = []", "hooks.before_window"),
    ('on_failure = [""]', "hooks.on_failure"),
    ('on_done = "./notify done"', "hooks.on_done"),
    ("timeout_s = 0", "hooks.timeout_s"),
    ('webhook_url = "chat.example/hook"', "hooks.webhook_url"),
    ('webhook_url = "ftp://chat.example/hook"', "hooks.webhook_url"),
    ("webhook_timeout_s = 0", "hooks.webhook_timeout_s"),
    ("webhook_retries = 50", "hooks.webhook_retries"),
    ("on_commit = []", "hooks.on_commit"),
])
def test_hooks_that_could_not_run_are_refused(tmp_path: Path, hooks: str, key: str) -> None:
    """An empty or string command, a zero timeout, a webhook that is not http(s), too many
    retries, an unknown hook: refused at load, naming the key."""
    assert error_for(tmp_path, MINIMAL + f"\n[hooks]\n{hooks}\n").key == key
