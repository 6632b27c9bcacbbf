"""The package as users get it: a wheel built from the checkout, installed outside it.

The wheel must carry everything a deploy reads (the playbooks, the report's templates, the
sandbox's sample), so the installed command plans and dry-runs a deploy of the sandbox
from a directory that is not the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (its dependencies come from the project's venv)."""
    root = tmp_path_factory.mktemp("package")
    # built from a copy: setuptools leaves build/ behind, and a stale one leaks into wheels
    source = root / "source"
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".sandbox", "build", "*.egg-info", "__pycache__", ".*_cache",
        ".hypothesis"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(root / "dist"), str(source)],
                           capture_output=True, text=True, check=False, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (root / "dist").glob("fastdowntime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"orchestrator/playbooks/fastdowntime.yaml", "orchestrator/playbooks/nodowntime.yaml",
            "orchestrator/views/report/run.html"} <= set(names)
    env = root / "venv"
    venv.create(env, with_pip=True)
    # the dependencies: the project's own venv, by a .pth (its editable install of this
    # checkout is not taken: .pth files of an added directory are not read)
    purelib = subprocess.run([str(env / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(env / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index",
                           str(wheel)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return env


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
