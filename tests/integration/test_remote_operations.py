"""Code staging, instances, health and disk on the real sandbox hosts, over real SSH.

Every test that changes a host puts it back: ``current`` on the sample
repository's first revision and no instance on the second port, whatever
happens (other tests rely on the sandbox's initial state). Releases staged
here stay staged (staging is idempotent), except the one staged on only some
hosts, which is removed again.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import Config, HostSettings
from orchestrator.remote import commands as C
from orchestrator.remote import operations as ops
from orchestrator.remote.commands import Command
from orchestrator.remote.results import RemoteFailed
from orchestrator.remote.ssh import Remote
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context

pytestmark = pytest.mark.integration

OLD_PORT, NEW_PORT = L.APP_PORTS


@pytest.fixture
def apps(config: Config) -> tuple[HostSettings, ...]:
    return config.role("app")


@pytest.fixture
def first(sandbox: Context) -> str:
    return str(json.loads((L.sandbox_dir() / "layout.json").read_text())["first"])


def git(config: Config, *args: str) -> str:
    return subprocess.run(["git", "-C", config.source.repo, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def tip(config: Config) -> str:
    return git(config, "rev-parse", config.source.branch)


@pytest.fixture
def restore(config: Config, remote: Remote, apps: tuple[HostSettings, ...],
            first: str) -> Iterator[None]:
    """Afterwards, whatever happened: no instance on the new port, current on the first revision."""
    yield
    stopped = ops.stop_instances(remote, config, apps, NEW_PORT)
    switched = ops.switch(remote, config, first, apps)
    stopped.raise_for_failures(f"stopping the instances on port {NEW_PORT}")
    switched.raise_for_failures("switching current back to the first revision")
    assert ops.deployed_revisions(remote, config, apps) == {h.name: first for h in apps}


def release(config: Config, host: HostSettings, sha: str) -> Path:
    return Path(config.app_root(host)) / "releases" / sha


def test_every_app_host_runs_the_first_revision(config: Config, remote: Remote,
                                               apps: tuple[HostSettings, ...],
                                               first: str) -> None:
    """The deployed revision of each app host is read from current: the sandbox's first."""
    assert ops.deployed_revisions(remote, config, apps) == {h.name: first for h in apps}
    assert ops.agreed_revision(remote, config) == first


def test_an_unreachable_host_fails_the_read_and_keeps_the_others(
        config: Config, remote: Remote, apps: tuple[HostSettings, ...]) -> None:
    """A host nobody answers for is named as unreachable; the other hosts' results are kept."""
    ghost = HostSettings(name="ghost", role="app", address="127.0.0.99", port=L.SSH_PORT,
                         root=config.app_root(apps[0]))
    with pytest.raises(RemoteFailed) as caught:
        ops.deployed_revisions(remote, config, (*apps, ghost))
    assert "failed on 1 of 5 hosts" in str(caught.value)
    assert "ghost: unreachable" in str(caught.value)
    assert [r.host for r in caught.value.result.results if r.ok] == [h.name for h in apps]


def test_stage_ships_the_tip_to_every_app_host(config: Config, remote: Remote,
                                              apps: tuple[HostSettings, ...], tip: str,
                                              first: str) -> None:
    """The tip's tree arrives whole in releases/<tip> on all hosts; current and first stay."""
    result = ops.stage(remote, config, config.source.repo, tip, apps)
    assert result.ok, [r.describe() for r in result.failed]
    files = sorted(git(config, "ls-tree", "-r", "--name-only", tip).splitlines())
    for host in apps:
        staged = release(config, host, tip)
        assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()) \
            == files
        assert (staged / "app" / "server.py").read_bytes() == subprocess.run(
            ["git", "-C", config.source.repo, "show", f"{tip}:app/server.py"],
            check=True, capture_output=True).stdout
        assert release(config, host, first).is_dir()
        assert not release(config, host, tip).with_name(tip + ".partial").exists()
        assert f"kept {first}" in result.by_host[host.name].stdout
    assert ops.agreed_revision(remote, config) == first
    again = ops.stage(remote, config, config.source.repo, tip, apps)
    assert again.ok and all("already staged" in r.stdout for r in again.results)


def test_a_corrupt_archive_is_refused_on_the_host(config: Config, remote: Remote,
                                                 apps: tuple[HostSettings, ...],
                                                 first: str) -> None:
    """Bytes that do not match the checksum are refused on the host and leave nothing."""
    made = ops.archive(config.source.repo, first)
    unknown = "f" * 40
    damaged = made.data[:1000] + bytes([made.data[1000] ^ 0xFF]) + made.data[1001:]
    result = remote.run(apps[0], C.receive_release(config.app_root(apps[0]), unknown,
                                                   made.sha256), stdin=damaged)
    assert result.status == "failed" and result.exit_code == C.CORRUPT_EXIT
    assert "arrived corrupt" in result.stderr_tail
    releases = release(config, apps[0], unknown).parent
    assert not any(p.name.startswith(unknown) for p in releases.iterdir())


def test_new_instance_runs_beside_the_old_and_passes_health(
        config: Config, remote: Remote, apps: tuple[HostSettings, ...], tip: str, first: str,
        restore: None) -> None:
    """The tip starts on the new port of every host, answers health with its sha, and stops;
    the old instance keeps answering with the first revision throughout."""
    assert ops.stage(remote, config, config.source.repo, tip, apps).ok
    started = ops.start_instances(remote, config, apps, tip, NEW_PORT)
    assert started.ok, [r.describe() for r in started.failed]
    healthy = ops.wait_all_healthy(config, apps, NEW_PORT, tip, 10.0)
    assert all(h.ok for h in healthy), [h.describe() for h in healthy]
    old = ops.wait_all_healthy(config, apps, OLD_PORT, first, 5.0)
    assert all(h.ok for h in old), [h.describe() for h in old]
    statuses = ops.instances_status(remote, config, apps)
    for host in apps:
        status = statuses[host.name]
        new, running_old = status.on_port(NEW_PORT), status.on_port(OLD_PORT)
        assert new is not None and new.running and new.release == tip
        assert running_old is not None and running_old.running and running_old.release == first
    stopped = ops.stop_instances(remote, config, apps, NEW_PORT)
    assert stopped.ok and all("stopped" in r.stdout for r in stopped.results)
    after = ops.instances_status(remote, config, apps)
    assert all(after[h.name].on_port(NEW_PORT) is None for h in apps)


def test_one_instance_start_to_healthy(config: Config, remote: Remote,
                                      apps: tuple[HostSettings, ...], tip: str,
                                      restore: None) -> None:
    """A single host's instance goes from start to healthy on the tip within its budget."""
    assert ops.stage(remote, config, config.source.repo, tip, apps[:1]).ok
    began = time.monotonic()
    started = ops.start_instance(remote, config, apps[0], tip, NEW_PORT)
    assert started.ok, started.describe()
    health = ops.wait_healthy(config, apps[0], NEW_PORT, tip, 10.0)
    assert health.ok, health.describe()
    assert time.monotonic() - began < 10.0
    assert ops.stop_instance(remote, config, apps[0], NEW_PORT).ok


def test_health_deadline_reports_the_answer_of_the_wrong_revision(
        config: Config, apps: tuple[HostSettings, ...], tip: str, first: str) -> None:
    """Waiting for the tip on an instance running the first revision fails, quoting its answer."""
    health = ops.wait_healthy(config, apps[0], OLD_PORT, tip, 0.2)
    assert not health.ok and health.revision == first and health.attempts > 1
    text = health.describe()
    assert f"{apps[0].name} port {OLD_PORT}" in text and first in text and "HTTP 200" in text


def test_switch_current_to_the_tip_and_back(config: Config, remote: Remote,
                                           apps: tuple[HostSettings, ...], tip: str, first: str,
                                           restore: None) -> None:
    """current moves to the tip on every host, is read back, and moves back to the first."""
    assert ops.stage(remote, config, config.source.repo, tip, apps).ok
    switched = ops.switch(remote, config, tip, apps)
    assert switched.ok and all(f"was releases/{first}" in r.stdout for r in switched.results)
    assert ops.agreed_revision(remote, config) == tip
    back = ops.switch(remote, config, first, apps)
    assert back.ok and ops.agreed_revision(remote, config) == first
    for host in apps:
        assert not (Path(config.app_root(host)) / "current.new").exists()


def test_switch_to_a_release_missing_on_one_host(config: Config, remote: Remote,
                                                apps: tuple[HostSettings, ...], first: str,
                                                restore: None) -> None:
    """A switch to a revision staged on three hosts of four: the fourth is reported with
    its stderr, the other three switched and their results kept."""
    second = git(config, "rev-list", "--first-parent", "--reverse",
                 config.source.branch).splitlines()[1]
    remove = [Command(("rm", "-rf", "--", str(release(config, h, second)))) for h in apps]
    try:
        assert remote.run(apps[3], remove[3]).ok
        assert ops.stage(remote, config, config.source.repo, second, apps[:3]).ok
        result = ops.switch(remote, config, second, apps)
        assert [r.host for r in result.failed] == [apps[3].name]
        failed = result.by_host[apps[3].name]
        assert failed.exit_code == C.NO_CURRENT_EXIT and "is not staged" in failed.stderr_tail
        assert all(result.by_host[h.name].ok for h in apps[:3])
        assert ops.deployed_revisions(remote, config, apps) == {
            **{h.name: second for h in apps[:3]}, apps[3].name: first}
        with pytest.raises(RemoteFailed, match=f"failed on 1 of 4 hosts .3 ok.: {apps[3].name}"):
            result.raise_for_failures("switching current")
    finally:
        assert ops.switch(remote, config, first, apps).ok
        for host, command in zip(apps, remove, strict=True):
            assert remote.run(host, command).ok


def test_free_disk_on_every_host_with_an_app_root(config: Config, remote: Remote) -> None:
    """Every app and scripts host reports its free MB; an impossible minimum fails them all."""
    hosts = (*config.role("app"), *config.role("scripts"))
    result = ops.free_disk(remote, config, hosts)
    assert result.ok and set(result.free_mb) == {h.name for h in hosts}
    assert all(mb > 0 for mb in result.free_mb.values())
    huge = ops.free_disk(remote, config, hosts, 1 << 40)
    assert len(huge.failed) == len(hosts) and set(huge.low) == {h.name for h in hosts}
    assert all("MB needed" in r.stderr_tail for r in huge.failed)
