"""The package as users get it: a wheel built from the checkout, installed outside it.

The wheel must carry everything a deploy reads (the playbooks, the report's templates, the
sandbox's sample), so the installed command plans and dry-runs a deploy of the sandbox
from a directory that is not the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT
from tests.gitrepo import GitRepo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout."""
    root = tmp_path_factory.mktemp("package")
    # built from a copy: setuptools leaves build/ behind, and a stale one leaks into wheels
    source = root / "source"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".venv-py3.*", ".sandbox", "build", "*.egg-info", "__pycache__",
        ".*_cache", ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(root / "dist"), str(source)],
                           capture_output=True, text=True, check=False, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [found] = (root / "dist").glob("fastdowntime-*.whl")
    names = zipfile.ZipFile(found).namelist()
    assert {"orchestrator/playbooks/fastdowntime.yaml", "orchestrator/playbooks/nodowntime.yaml",
            "orchestrator/views/report/run.html"} <= set(names)
    return found


def install(wheel: Path, python: str, deps_purelib: str, env: Path) -> Path:
    """A fresh venv of ``python`` at ``env`` holding ``wheel``, its dependencies read from
    ``deps_purelib`` (a venv's site-packages) by a .pth (an editable install of this
    checkout there is not taken: .pth files of an added directory are not read)."""
    subprocess.run([python, "-m", "venv", str(env)], check=True, capture_output=True)
    purelib = subprocess.run([str(env / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(deps_purelib + "\n")
    done = subprocess.run([str(env / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return env


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """A fresh venv of this Python holding the wheel (dependencies: the project's venv)."""
    return install(wheel, sys.executable, sysconfig.get_paths()["purelib"],
                   wheel.parent.parent / "venv")


def fdt(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(env / "bin" / "fastdowntime"), *args], capture_output=True,
                          text=True, check=False, cwd=cwd, timeout=180)


def test_the_installed_command_runs_from_outside_the_checkout(installed: Path,
                                                              tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import orchestrator; print(orchestrator.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert where.stdout.startswith(str(installed)), where.stdout
    version = fdt(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "fastdowntime 0.1.0"


def test_the_installed_command_plans_and_dry_runs_the_sandbox(installed: Path,
                                                               sandbox: Context,
                                                               tmp_path: Path) -> None:
    config = str(PROJECT_ROOT / "config" / "sandbox.toml")
    planned = fdt(installed, "-c", config, "plan", "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert '"cold_patches"' in planned.stdout
    dry = fdt(installed, "-c", config, "deploy", "--dry-run", "--yes",
              "--approve", "patch-2200-01-0.sql:ci", "--approve", "patch-2200-03-0.sql:ci",
              "--approve", "patch-2200-04-0.sql:ci", "--approve", "patch-2200-05-0.sql:ci",
              cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-2000:]
    assert "apply_cold_patches" in dry.stdout and "fastdowntime.yaml" in dry.stdout


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_wheel_runs_on_the_other_supported_pythons(wheel: Path, tmp_path: Path,
                                                       version: str) -> None:
    """On each other Python of the classifiers (``make install`` makes ``.venv-pyX.Y`` with
    the dependencies where the machine has that Python): the wheel installs, and the
    command answers ``--version``, plans the sandbox's sample history offline and lints
    its patches."""
    deps = PROJECT_ROOT / f".venv-py{version}"
    if not (deps / ".installed").exists():
        pytest.skip(f"no Python {version} here (tools/install-other-pythons made no {deps})")
    python = str(deps / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    env = install(wheel, python, purelib, tmp_path / "venv")
    version_line = fdt(env, "--version", cwd=tmp_path)
    assert version_line.stdout.strip() == "fastdowntime 0.1.0", version_line.stderr
    repo = GitRepo(tmp_path / "repo")
    first = repo.commit("Root", {"README": "app\n", "database/schema/baseline.sql": "\n"})
    repo.commit("Add a column (cold)", {"database/schema/patch-2200-01-0.sql":
                                        "ALTER TABLE item ADD COLUMN note text;\n"})
    planned = fdt(env, "plan", "--json", "--repo", str(repo.path), "--from", first,
                  cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert json.loads(planned.stdout)["fastdowntime"]["cold_patches"] == [
        "patch-2200-01-0.sql"]
    linted = fdt(env, "patches", "--json",
                 str(repo.path / "database/schema/patch-2200-01-0.sql"), cwd=tmp_path)
    assert linted.returncode in (0, 3), linted.stderr[-2000:]
    assert json.loads(linted.stdout)[0]["kind"] == "cold"
