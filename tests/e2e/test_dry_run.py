"""``deploy --dry-run`` prints the commands a real deploy sends, step by step.

For each playbook, on a fresh sandbox: the dry run's output is parsed into, per step,
the SSH commands per host (``host: command``) and the lines for haproxy's admin channel
(``lb: line``); then a real deploy of the same plan from the same state runs under
:mod:`tests.e2e.recording`, which records every command at the SSH layer and every line
written to the admin channel, tagged with its step. Per step they must be equal.

Lines under an ``if ...:`` (or ``otherwise:``) are what the run does only on that answer
(a fallback, an undo). A deploy that succeeds sends none of them; one whose new code fails
its health check on app1 (the restart playbook) sends app1's fallback, and nothing else.

What legitimately differs between the two runs, and only that:

- the releases a prune protects because the host's status answer names them running:
  the dry run shows :data:`~orchestrator.remote.operations.RUNNING` in their place,
  a real run sends full shas there;
- how often a poll is sent: a ``lb:`` line followed by ``-- again every ...`` is sent
  once or more;
- the admin channel's session (the ``socat`` that opens it and its setup lines): the dry
  run states it once, above the steps, since a run opens it once, wherever it first
  needs it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.remote.commands import is_sha
from orchestrator.remote.haproxy import SESSION_SETUP
from orchestrator.remote.operations import RUNNING
from orchestrator.runner.playbook import load_playbook
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.e2e.conftest import Sandbox, approvals
from tests.e2e.test_deploy import HEALTHY, PATCH_07, UNHEALTHY_ON_APP1, cold_patch

pytestmark = pytest.mark.e2e

STEP = re.compile(r"^ ?\d+\. (\w+): ")
BODY = "      "
CONDITIONAL = ("if ", "otherwise")
COLD_PATCH = cold_patch()


@dataclass
class Shown:
    """What the dry run shows for one step, in order: the SSH commands per host and the lines
    for haproxy's admin channel, each with whether it runs only on an answer (under an
    ``if``); an admin line also with whether it is a poll."""

    ssh: dict[str, list[tuple[str, bool]]] = field(default_factory=lambda: defaultdict(list))
    lb: list[tuple[str, bool, bool]] = field(default_factory=list)


@dataclass
class Sent:
    """What a real run sent during one step."""

    ssh: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lb: list[str] = field(default_factory=list)


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def parse_dry_run(stdout: str, hosts: set[str]) -> tuple[list[str], dict[str, Shown]]:
    """The dry run's header lines, and per ``stage/step`` what it shows."""
    lines = stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("== "))
    header, steps = lines[:first], {}
    stage, shown = "", Shown()
    entries: list[tuple[int, str]] = []
    i = first
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("== "):
            stage = "nodowntime" if line.split()[1] == "nodowntime" else "fastdowntime"
        elif found := STEP.match(line):
            entries = []
            shown = steps[f"{stage}/{found.group(1)}"] = Shown()
        elif line.startswith(BODY):
            body = line[len(BODY):]
            text = body.lstrip(" ")
            host, _, command = text.partition(": ")
            if host in hosts:  # a command may span lines (a script): read until it parses
                while not _complete(command):
                    command += "\n" + lines[i]
                    i += 1
                text = f"{host}: {command}"
            entries.append((len(body) - len(text.split("\n")[0]), text))
            _classify(entries, shown, hosts)
    return header, steps


def _classify(entries: list[tuple[int, str]], shown: Shown, hosts: set[str]) -> None:
    """File the last entry in ``shown``, knowing the headers it is indented under."""
    indent, text = entries[-1]
    under, level = [], indent
    for before_indent, before in reversed(entries[:-1]):
        if before_indent < level and before.endswith(":"):
            under.append(before)
            level = before_indent
    conditional = any(h.startswith(CONDITIONAL) for h in under)
    host, _, command = text.partition(": ")
    if host == "lb":
        shown.lb.append((command, False, conditional))
    elif host in hosts:
        shown.ssh[host].append((command, conditional))
    elif text.startswith("-- again every") and shown.lb and entries[-2][1].endswith(
            f"lb: {shown.lb[-1][0]}"):
        shown.lb[-1] = (shown.lb[-1][0], True, shown.lb[-1][2])


def read_records(path: Path) -> tuple[list[dict[str, str]], dict[str, Sent]]:
    """Every record, and per ``stage/step`` what the run sent then."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    sent: dict[str, Sent] = defaultdict(Sent)
    for record in records:
        if record["step"] is None or record["kind"] not in ("ssh", "lb"):
            continue
        if record["kind"] == "ssh":
            sent[record["step"]].ssh[record["host"]].append(record["command"])
        else:
            sent[record["step"]].lb.append(record["command"])
    return records, sent


def same_command(shown: str, sent: str) -> bool:
    """Equal, or equal but for the releases a status answer names (see the module text)."""
    if not shown.endswith(" " + RUNNING):
        return shown == sent
    prefix = shown[:-len(RUNNING)]
    return sent.startswith(prefix) and all(is_sha(s) for s in sent[len(prefix):].split())


def taken(shown: list[tuple[str, bool, bool]], sent: list[str]) -> list[str] | None:
    """The conditional lines ``sent`` took, if ``sent`` is ``shown`` in order with every
    unconditional line once (a poll once or more) and conditional ones sent or not; else
    None."""
    at, extra = 0, []
    for line, polled, conditional in shown:
        if at < len(sent) and same_command(line, sent[at]):
            extra += [line] if conditional else []
            at += 1
            while polled and at < len(sent) and sent[at] == line:
                at += 1
        elif not conditional:
            return None
    return extra if at == len(sent) else None


def deploy_and_compare(sandbox: Sandbox, config: Path, tmp_path: Path, playbooks: list[str],
                       exit_code: int, *extra: str) -> dict[str, dict[str, list[str]]]:
    """Dry run, then a recorded real deploy (which must exit ``exit_code``; ``extra`` cold
    patches approved); check per step of ``playbooks`` that what was sent is what the dry
    run shows; return, per step and host (``lb`` for the admin channel), the conditional
    lines the run took."""
    hosts = {h.name for h in sandbox.layout.hosts}
    dry = sandbox.cli("deploy", "--dry-run", *approvals(*extra), config=config)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-2000:]
    header, shown = parse_dry_run(dry.stdout, hosts)

    out = tmp_path / "sent.jsonl"
    real = subprocess.run([sys.executable, "-m", "tests.e2e.recording", str(out), "-c",
                           str(config), "deploy", "--yes", *approvals(*extra)],
                          capture_output=True, text=True, timeout=180, check=False,
                          cwd=PROJECT_ROOT)
    assert real.returncode == exit_code, real.stdout[-3000:] + real.stderr[-3000:]
    records, sent = read_records(out)

    steps = [f"{'nodowntime' if name == 'nodowntime' else 'fastdowntime'}/{s.name}"
             for name in playbooks for s in load_playbook(name).steps]
    assert list(shown) == steps
    assert set(sent) <= set(steps), "a step undone, or a command outside the playbooks"
    took: dict[str, dict[str, list[str]]] = defaultdict(dict)
    compared = 0
    for step in steps:
        want, got = shown[step], sent.get(step, Sent())
        if step not in sent:  # not reached (the run stopped before)
            continue
        assert set(got.ssh) <= set(want.ssh), (step, set(got.ssh) - set(want.ssh))
        for host, commands in want.ssh.items():
            extra = taken([(c, False, cond) for c, cond in commands], got.ssh[host])
            assert extra is not None, (step, host, commands, got.ssh[host])
            took[step][host] = extra
            compared += len(got.ssh[host])
        extra = taken(want.lb, got.lb)
        assert extra is not None, (step, want.lb, got.lb)
        took[step]["lb"] = extra
        compared += len(got.lb)
    assert compared >= 30, compared

    opened = [r for r in records if r["kind"] == "open"]
    setup = [r["command"] for r in records if r["kind"] == "lb-setup"]
    assert opened and setup == list(SESSION_SETUP) * len(opened)
    assert all(f"`{r['host']}: {r['command']}`" in " ".join(header) for r in opened)
    assert any(RUNNING in c for s in shown.values() for cs in s.ssh.values() for c, _ in cs)
    return took


@pytest.mark.parametrize("playbook", ["fastdowntime", "fastdowntime-restart"])
def test_dry_run_prints_what_a_real_deploy_sends(fresh: Sandbox, tmp_path: Path,
                                                 playbook: str) -> None:
    """For every step of the playbook and of nodowntime, the dry run's SSH commands per host
    and haproxy lines are exactly what a real deploy from the same state sends."""
    config = fresh.write_config(tmp_path, playbook=f'"{playbook}"')
    took = deploy_and_compare(fresh, config, tmp_path, [playbook, "nodowntime"], 0)
    assert {line for hosts in took.values() for lines in hosts.values() for line in lines} \
        == set(), "a successful deploy takes no fallback and undoes nothing"
    assert {"fastdowntime/close_window", "nodowntime/rolling_update"} <= set(took)


def test_dry_run_shows_the_fallback_a_failing_host_takes(fresh: Sandbox,
                                                          tmp_path: Path) -> None:
    """Restart playbook, app1's new code unhealthy: app1 sends the fallback the dry run shows
    under its `if`, and every other command is the dry run's too."""
    server = "app/server.py"
    fresh.commit("Health answers 500 on app1", {server: fresh.edit(server, HEALTHY,
                                                                   UNHEALTHY_ON_APP1)})
    fresh.commit("Add extra column to item (cold)", {PATCH_07: COLD_PATCH})
    # drain mode: the restart inside the window, all hosts at once, each with its fallback
    config = fresh.write_config(tmp_path, playbook='"fastdowntime-restart"',
                                health_timeout_s="2", mode='"drain"')
    took = deploy_and_compare(fresh, config, tmp_path, ["fastdowntime-restart"], 4,
                              "patch-2200-07-0")
    fallback = took["fastdowntime/restart_on_release"]
    stop, switch_back, start = fallback["app1"]
    assert stop.endswith("appctl stop 8001") and switch_back.endswith(f" {fresh.first}")
    assert start.endswith(f"releases/{fresh.first} 8001")
    assert {h: lines for hosts in took.values() for h, lines in hosts.items() if lines} \
        == {"app1": fallback["app1"]}
