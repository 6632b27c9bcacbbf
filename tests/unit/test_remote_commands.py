"""Remote commands: values travel only as argv elements, and the constant scripts work.

The property tests throw hostile strings at every builder; the script tests
run the real scripts with the local ``sh`` on a temporary release tree whose
root name is itself hostile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import Config, HostSettings, load_config
from orchestrator.errors import BadInput
from orchestrator.remote import commands as C
from orchestrator.remote.commands import Command
from orchestrator.sandbox.layout import PROJECT_ROOT

SHA_A, SHA_B, SHA_C, SHA_D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
MARK = "\u2603"
"""In every generated value and in no script: finding it in a script means a value leaked."""

HOSTILE_PARTS = ["'", '"', ";", "$(touch pwned)", "`touch pwned`", "\n", " ", "-", "--",
                 "-rf", "$1", "${HOME}", "\\", "{root}", "{port}", "{{", "}}", "*", "~",
                 "#", "|", "&&", ">x", "ünïcödé", "🐛", "\t", "\r", "%s", "'\"'\"'"]
hostile = st.lists(st.one_of(st.sampled_from(HOSTILE_PARTS),
                             st.text(st.characters(blacklist_characters="\0",
                                                   blacklist_categories=("Cs",)),
                                     max_size=8)),
                   max_size=6).map(lambda parts: "".join(parts) + MARK)
leading_dash = hostile.map(lambda s: "-" + s)
values = st.one_of(hostile, leading_dash)
shas = st.text("0123456789abcdef", min_size=40, max_size=40)
not_shas = st.one_of(
    st.text(max_size=60).filter(lambda s: not re.fullmatch(r"[0-9a-f]{40}", s)),
    shas.map(str.upper).filter(lambda s: s != s.lower()),
    shas.map(lambda s: s[:39]), shas.map(lambda s: s + "0"), shas.map(lambda s: "-" + s[1:]))
ports = st.integers(1, 65535)

SANDBOX = load_config(PROJECT_ROOT / "config" / "sandbox.toml")


def config_for(root: str, name: str, address: str) -> tuple[Config, HostSettings]:
    host = HostSettings(name=name, role="app", address=address, port=22, root=root)
    return dataclasses.replace(SANDBOX, hosts=(host,)), host


def reference_fill(element: str, values: dict[str, str]) -> str:
    """What filling one element must give: each placeholder replaced once, nothing re-read."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], element)


def assert_round_trips(command: Command) -> None:
    assert shlex.split(command.render()) == list(command.argv)


def assert_constant_script(command: Command, *args: str) -> None:
    """``sh -c SCRIPT sh ARGS``: SCRIPT is one of the module's constants, the values are ARGS."""
    assert command.argv[:2] == ("sh", "-c") and command.argv[3] == "sh"
    assert command.argv[2] in C.SCRIPTS.values()
    assert command.argv[4:] == args
    assert MARK not in command.argv[2]
    assert_round_trips(command)


@given(root=values, sha=shas, digest=st.text("0123456789abcdef", min_size=64, max_size=64),
       keep=st.integers(0, 50), protect=st.lists(shas, max_size=4))
def test_release_builders_pass_hostile_roots_as_positional_arguments(
        root: str, sha: str, digest: str, keep: int, protect: list[str]) -> None:
    """Every release builder keeps a hostile root out of its script, as one exact argv element."""
    assert_constant_script(C.read_revision(root), root)
    assert_constant_script(C.receive_release(root, sha, digest), root, sha, digest)
    assert_constant_script(C.switch_current(root, sha), root, sha)
    assert_constant_script(C.prune_releases(root, keep, protect), root, str(keep),
                           *dict.fromkeys(protect))
    assert_constant_script(C.free_disk_mb(root), root)


@given(root=values, name=values, address=values, sha=shas, port=ports)
def test_service_builders_fill_each_element_once(root: str, name: str, address: str,
                                                 sha: str, port: int) -> None:
    """Config templates get hostile roots, names and addresses filled in place, never re-read."""
    config, host = config_for(root, name, address)
    app, scripts = SANDBOX.app, SANDBOX.scripts
    assert app is not None and scripts is not None
    base = {"root": root, "host": name, "address": address}
    release = f"{root}/releases/{sha}"
    cases: list[tuple[Command, tuple[str, ...], dict[str, str]]] = [
        (C.app_start(config, host, sha, port), app.start,
         {**base, "release": release, "port": str(port)}),
        (C.app_stop(config, host, port), app.stop, {**base, "port": str(port)}),
        (C.app_status(config, host), app.status, base),
        (C.scripts_start(config, host), scripts.start, {**base, "release": f"{root}/current"}),
        (C.scripts_start(config, host, sha), scripts.start, {**base, "release": release}),
        (C.scripts_stop(config, host), scripts.stop, base),
        (C.scripts_status(config, host), scripts.status, base),
    ]
    for command, argv, filled in cases:
        assert command.argv == tuple(reference_fill(e, filled) for e in argv)
        assert_round_trips(command)


@given(root=values, name=values, address=values, port=ports)
def test_templates_using_every_placeholder_keep_values_whole(root: str, name: str, address: str,
                                                            port: int) -> None:
    """A template using every placeholder still gives exactly one word per element."""
    argv = ("{root}/bin/ctl", "--at={address}:{port}", "{host}", "{{literal}}", "{release}")
    filled = {"root": root, "release": root + "/current", "port": str(port),
              "address": address, "host": name}
    command = C.template(argv, **filled)
    assert command.argv == (f"{root}/bin/ctl", f"--at={address}:{port}", name, "{literal}",
                            f"{root}/current")
    assert_round_trips(command)


@given(sha=not_shas, root=values)
def test_invalid_shas_are_refused_by_every_builder(sha: str, root: str) -> None:
    """Anything but a full lowercase 40-hex sha is BadInput wherever a revision is taken."""
    config, host = config_for(root, "web1", "10.0.0.1")
    builders: list[Callable[[], object]] = [
        lambda: C.receive_release(root, sha, "0" * 64),
        lambda: C.switch_current(root, sha),
        lambda: C.prune_releases(root, 3, [SHA_A, sha]),
        lambda: C.release_dir(root, sha),
        lambda: C.app_start(config, host, sha, 8001),
        lambda: C.scripts_start(config, host, sha),
    ]
    for build in builders:
        with pytest.raises(BadInput, match="revision"):
            build()


@pytest.mark.parametrize("port", [0, 65536, -1, True, "8001", 8001.0, None])
def test_ports_must_be_integers_in_range(port: object) -> None:
    """A port that is not an int from 1 to 65535 is refused (bools and strings too)."""
    config, host = config_for("/srv/app", "web1", "10.0.0.1")
    with pytest.raises(BadInput, match="port"):
        C.app_stop(config, host, port)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="port"):
        C.app_start(config, host, SHA_A, port)  # type: ignore[arg-type]


def test_unknown_placeholder_is_named() -> None:
    """A placeholder the command does not know is BadInput naming it and the known ones."""
    with pytest.raises(BadInput, match=r"\{colour\}.*known here: \{root\}"):
        C.template(["{root}/bin/ctl", "{colour}"], root="/srv/app")
    config, host = config_for("/srv/app", "web1", "10.0.0.1")
    assert SANDBOX.app is not None
    bad = dataclasses.replace(config, app=dataclasses.replace(
        SANDBOX.app, stop=("{root}/bin/appctl", "stop", "{release}")))
    with pytest.raises(BadInput, match=r"\{release\}"):
        C.app_stop(bad, host, 8001)


def test_only_the_documented_placeholders_can_be_filled() -> None:
    """Filling a name that is not one of the five placeholders is a programming error."""
    with pytest.raises(TypeError, match="colour"):
        C.template(["{root}"], root="/srv/app", colour="red")


@pytest.mark.parametrize("element", ["{root.real}", "{root[0]}", "{root!r}", "{root:>9}", "{}",
                                     "{root"])
def test_placeholders_are_plain_names_only(element: str) -> None:
    """Attribute, index, conversion and format-spec placeholders are refused, not evaluated."""
    with pytest.raises(BadInput):
        C.template([element], root="/srv/app")


def test_nul_and_empty_values_are_refused() -> None:
    """A NUL byte cannot travel in argv and an empty root means nothing: both are BadInput."""
    with pytest.raises(BadInput, match="NUL"):
        C.read_revision("/srv/a\0pp")
    with pytest.raises(BadInput, match="empty"):
        C.switch_current("", SHA_A)
    with pytest.raises(BadInput, match="NUL"):
        C.template(["{host}"], host="we\0b")


def test_values_without_utf8_form_are_refused() -> None:
    """A lone surrogate (Python can hold it, no host can receive it) is BadInput, not a
    UnicodeEncodeError halfway through a group operation."""
    with pytest.raises(BadInput, match="surrogate"):
        C.read_revision("/srv/\ud800app")
    with pytest.raises(BadInput, match="surrogate"):
        C.template(["{host}"], host="we\udfffb")


def test_receive_needs_a_sha256_digest() -> None:
    """The archive checksum must be a sha256 hex digest."""
    with pytest.raises(BadInput, match="checksum"):
        C.receive_release("/srv/app", SHA_A, "abc")


# --- the scripts, run by the local sh ------------------------------------------------------

HOSTILE_ROOTS = ["plain", "-rf", "sp ace $(touch pwned) `touch pwned` 'q\" ;x", "new\nline",
                 "ünï 🐛", "--", "-"]


def run(command: Command, stdin: bytes = b"", cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command.argv, input=stdin, capture_output=True, cwd=cwd,
                          check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(), proc.stderr.decode())


def make_archive(files: dict[str, bytes]) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest()


@pytest.fixture(params=HOSTILE_ROOTS)
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / request.param
    path.mkdir()
    return path


ARCHIVE, DIGEST = make_archive({"app/server.py": b"print('hi')\n", "README.md": b"hi\n"})


def test_receive_verifies_unpacks_and_is_idempotent(root: Path) -> None:
    """A release arrives verified into releases/<sha>; again is a no-op saying so."""
    done = run(C.receive_release(str(root), SHA_A, DIGEST), ARCHIVE, cwd=root)
    assert done.returncode == 0, done.stderr
    assert (root / "releases" / SHA_A / "app" / "server.py").read_bytes() == b"print('hi')\n"
    assert "(2 files," in done.stdout
    assert sorted(os.listdir(root / "releases")) == [SHA_A]
    again = run(C.receive_release(str(root), SHA_A, DIGEST), ARCHIVE, cwd=root)
    assert again.returncode == 0 and "already staged" in again.stdout
    assert not (root / "pwned").exists() and not Path("pwned").exists()


def test_corrupt_archive_is_refused_and_leaves_nothing(root: Path) -> None:
    """An archive whose sha256 differs is refused (exit 4) and no partial release remains."""
    damaged = ARCHIVE[:600] + bytes([ARCHIVE[600] ^ 1]) + ARCHIVE[601:]
    done = run(C.receive_release(str(root), SHA_A, DIGEST), damaged)
    assert done.returncode == C.CORRUPT_EXIT
    assert "corrupt" in done.stderr and DIGEST in done.stderr
    assert os.listdir(root / "releases") == []


def test_unpack_failure_is_reported_and_cleaned(root: Path) -> None:
    """Bytes that match their checksum but are no tar archive fail to unpack (exit 5), cleanly."""
    junk = b"not a tar archive\n" * 100
    done = run(C.receive_release(str(root), SHA_A, hashlib.sha256(junk).hexdigest()), junk)
    assert done.returncode == C.UNPACK_EXIT and "unpacking" in done.stderr
    assert os.listdir(root / "releases") == []


def test_switch_and_read_revision(root: Path) -> None:
    """current switches atomically to a staged release, is read back, and refuses a missing one."""
    missing = run(C.read_revision(str(root)))
    assert missing.returncode == C.NO_CURRENT_EXIT and "no current release link" in missing.stderr
    for sha in (SHA_A, SHA_B):
        assert run(C.receive_release(str(root), sha, DIGEST), ARCHIVE).returncode == 0
    switched = run(C.switch_current(str(root), SHA_A))
    assert switched.returncode == 0 and "(was none)" in switched.stdout
    assert os.readlink(root / "current") == f"releases/{SHA_A}"
    assert run(C.read_revision(str(root))).stdout == SHA_A + "\n"
    switched = run(C.switch_current(str(root), SHA_B))
    assert f"was releases/{SHA_A}" in switched.stdout
    assert run(C.read_revision(str(root))).stdout == SHA_B + "\n"
    refused = run(C.switch_current(str(root), SHA_C))
    assert refused.returncode == C.NO_CURRENT_EXIT and "not staged" in refused.stderr
    assert os.readlink(root / "current") == f"releases/{SHA_B}"
    assert not (root / "current.new").exists()


def test_read_revision_refuses_a_dangling_current(tmp_path: Path) -> None:
    """A current link to a release that is gone is reported, not read as a revision."""
    (tmp_path / "current").symlink_to(f"releases/{SHA_A}")
    done = run(C.read_revision(str(tmp_path)))
    assert done.returncode == C.NO_CURRENT_EXIT and "does not exist" in done.stderr


def test_prune_keeps_newest_current_and_protected(root: Path) -> None:
    """Prune keeps the newest N, current and the protected releases, and nothing else of theirs."""
    releases = root / "releases"
    for age, sha in enumerate((SHA_A, SHA_B, SHA_C, SHA_D)):
        assert run(C.receive_release(str(root), sha, DIGEST), ARCHIVE).returncode == 0
        stamp = time.time() - 1000 + age * 10
        os.utime(releases / sha, (stamp, stamp))
    (releases / "notes").mkdir()
    (releases / (SHA_A + ".partial")).mkdir()
    assert run(C.switch_current(str(root), SHA_A)).returncode == 0
    done = run(C.prune_releases(str(root), 1, [SHA_B]))
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(releases)) == sorted([SHA_A, SHA_B, SHA_D, "notes",
                                                   SHA_A + ".partial"])
    assert done.stdout.splitlines() == [f"kept {SHA_D} newest", f"removed {SHA_C}",
                                        f"kept {SHA_B} protected", f"kept {SHA_A} current"]


def test_received_release_counts_as_newest(tmp_path: Path) -> None:
    """Receiving (or receiving again) marks a release newest, so prune keeps it first."""
    releases = tmp_path / "releases"
    for sha in (SHA_A, SHA_B):
        assert run(C.receive_release(str(tmp_path), sha, DIGEST), ARCHIVE).returncode == 0
        os.utime(releases / sha, (1, 1))
    assert run(C.receive_release(str(tmp_path), SHA_A, DIGEST), ARCHIVE).returncode == 0
    assert run(C.prune_releases(str(tmp_path), 1)).stdout.splitlines() == [
        f"kept {SHA_A} newest", f"removed {SHA_B}"]


def test_free_disk_prints_megabytes(root: Path) -> None:
    """free_disk_mb prints an integer MB for an existing path and fails for a missing one."""
    done = run(C.free_disk_mb(str(root)))
    assert done.returncode == 0 and done.stdout.strip().isdigit()
    statvfs = os.statvfs(root)
    assert abs(int(done.stdout) - statvfs.f_bavail * statvfs.f_frsize // 2**20) < 64
    assert run(C.free_disk_mb(str(root / "missing"))).returncode != 0


@settings(max_examples=25, deadline=None)
@given(root=values)
def test_hostile_roots_never_run_as_code(tmp_path_factory: pytest.TempPathFactory,
                                         root: str) -> None:
    """Whatever the root's name, the scripts create nothing but under that exact directory."""
    base = tmp_path_factory.mktemp("hostile")
    target = base / root.replace("/", "_")
    target.mkdir()
    assert run(C.receive_release(str(target), SHA_A, DIGEST), ARCHIVE, cwd=base).returncode == 0
    assert run(C.switch_current(str(target), SHA_A), cwd=base).returncode == 0
    assert run(C.read_revision(str(target)), cwd=base).stdout == SHA_A + "\n"
    assert sorted(os.listdir(base)) == [target.name]
    assert sorted(os.listdir(target)) == ["current", "releases"]
