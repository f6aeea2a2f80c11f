"""Packaging: the sdist and wheel carry what an administrator needs, and an installed wheel works.

What `pipx install .` does is build this wheel and install it into a fresh virtual environment: the second test
does exactly that (with the registry the machine uses for every other dependency) and runs the result.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = "pfxhttp-0.1.0.data/data/share"
WHEEL_DATA = {
    f"{DATA}/man/man8/pfxhttp.8",
    f"{DATA}/man/man5/pfxhttp.yml.5",
    f"{DATA}/pfxhttp/systemd/pfxhttp.service",
    f"{DATA}/pfxhttp/systemd/pfxhttp.socket",
    f"{DATA}/pfxhttp/systemd/pfxhttp@.socket",
    f"{DATA}/pfxhttp/examples/pfxhttp.yml",
    f"{DATA}/pfxhttp/examples/mailcontroller.yml",
    "pfxhttp/config/pfxhttp.schema.json",
    "pfxhttp/demo/pfxhttp-demo.yml",
    "pfxhttp/demo/maildir.json",
    "pfxhttp/py.typed",
}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def test_wheel_and_sdist_carry_man_pages_units_examples_and_schema(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert WHEEL_DATA <= names, WHEEL_DATA - names
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in (
        "man/pfxhttp.8",
        "systemd/pfxhttp.service",
        "etc/examples/mailcontroller.yml",
        "dev",
        "tests/conftest.py",
        "tests/postfix_templates/main.cf",
        "pfxhttp/config/pfxhttp.schema.json",
    ):
        assert needed in members, needed


def test_installed_wheel_runs(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=600)
    pfxhttp = env_dir / "bin" / "pfxhttp"
    version = subprocess.run(
        [str(pfxhttp), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert version.stdout.strip() == "pfxhttp 0.1.0"
    example = env_dir / "share" / "pfxhttp" / "examples" / "pfxhttp.yml"
    check = subprocess.run(
        [str(pfxhttp), "check", "--config", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert (env_dir / "share" / "man" / "man8" / "pfxhttp.8").is_file()
    schema = subprocess.run([str(pfxhttp), "schema"], capture_output=True, text=True, timeout=60, check=True)
    assert '"$schema"' in schema.stdout
