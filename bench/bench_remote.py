"""Remote execution: a no-op on 40 hosts vs on 1, and staging to 20 hosts vs to 1.

Real sshd hosts (bench/sshfarm.py) on loopback; connections are opened
first (a run keeps them warm), then each measurement is the median of
several rounds, both sides in the same run. Targets: no-op 40/1 <= 2x,
staging 20/1 <= 3x.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from bench.sshfarm import SshFarm
from orchestrator.remote.commands import Command
from orchestrator.remote.ssh import Remote

ROUNDS = 15


def median_time(func: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def noop(farm: SshFarm) -> None:
    config = farm.config(parallelism=40)
    with Remote(config) as remote:
        started = time.perf_counter()
        assert remote.connect_all(config.hosts).ok
        connect = time.perf_counter() - started
        hosts = list(config.hosts)
        noop = Command(("true",))

        def run(group: list) -> None:  # type: ignore[type-arg]
            result = remote.run_all(group, noop)
            assert result.ok, result.failed

        single = median_time(lambda: run(hosts[:1]))
        cpu_started = time.process_time()
        many = median_time(lambda: run(hosts))
        cpu_per_host = (time.process_time() - cpu_started) / ROUNDS / len(hosts)
        serial = median_time(lambda: [run([h]) for h in hosts], rounds=3)
    print(f"connect 40 hosts in parallel: {connect:.3f} s")
    print(f"no-op on 1 host:              {single * 1000:.1f} ms")
    print(f"no-op on 40 hosts, parallel:  {many * 1000:.1f} ms")
    print(f"no-op on 40 hosts, serial:    {serial * 1000:.1f} ms "
          f"(parallel speed-up {serial / many:.1f}x)")
    print(f"orchestrator CPU per host and command: {cpu_per_host * 1000:.2f} ms "
          "(paramiko in one process; loopback adds no latency to hide it behind)")
    print(f"ratio 40/1: {many / single:.2f}x (target <= 2x) "
          f"{'ok' if many <= 2 * single else 'OVER TARGET'}")


def staging(farm: SshFarm) -> None:
    """Stage a real revision (the project's own HEAD, ~a few hundred KB) to 1 and to 20 hosts."""
    import subprocess

    from orchestrator.remote import operations
    from orchestrator.sandbox.layout import PROJECT_ROOT

    repo = str(PROJECT_ROOT)
    shas = subprocess.run(["git", "-C", repo, "rev-list", "--max-count=8", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.split()
    config = farm.config(parallelism=20)
    hosts = list(config.hosts)[:20]
    with Remote(config) as remote:
        assert remote.connect_all(hosts).ok
        size = len(operations.archive(repo, shas[0]).data)

        def stage(group: list, sha: str) -> float:  # type: ignore[type-arg]
            started = time.perf_counter()
            result = operations.stage(remote, config, repo, sha, group)
            assert result.ok, result.failed
            return time.perf_counter() - started

        # every round stages a revision the hosts do not have yet
        single = statistics.median(stage(hosts[:1], sha) for sha in shas[:4])
        many = statistics.median(stage(hosts, sha) for sha in shas[4:8])
    print(f"stage a {size // 1024} KB release to 1 host:   {single * 1000:.0f} ms")
    print(f"stage a {size // 1024} KB release to 20 hosts: {many * 1000:.0f} ms")
    print(f"ratio 20/1: {many / single:.2f}x (target <= 3x) "
          f"{'ok' if many <= 3 * single else 'OVER TARGET'}")


def main() -> None:
    with SshFarm(40) as farm:
        noop(farm)
        staging(farm)
