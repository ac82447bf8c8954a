"""Packaging: license and metadata, package data (configs, py.typed), and a wheel that installs
in a clean virtual environment and runs the quick demo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_is_spdx_and_the_file_exists():
    project = _project()
    assert project["license"] == "MIT"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_classifiers_and_typed_marker():
    project = _project()
    classifiers = project["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # SPDX replaces these
    assert (ROOT / "src" / "mflows" / "py.typed").is_file()
    # every URL given is filled in (no placeholders)
    for url in project.get("urls", {}).values():
        assert url.startswith("https://") and "example" not in url and "TODO" not in url


def test_configs_ship_as_package_data():
    from importlib import resources

    configs = resources.files("mflows") / "configs"
    names = [p.name for p in configs.iterdir() if p.name.endswith(".toml")]
    assert "power_mf_alternating.toml" in names and len(names) >= 70
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "configs/*.toml" in data["package-data"]["mflows"]
    assert "py.typed" in data["package-data"]["mflows"]
    assert not list((ROOT / "configs").glob("*.toml"))  # one copy only: the package's


@pytest.mark.slow
def test_wheel_installs_in_a_clean_venv_and_runs_the_quick_demo(tmp_path: Path):
    """Builds the wheel, installs it (and torch, from the local wheel cache or index) into a
    fresh venv without system site-packages, and runs ``mflows demo --quick`` there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
    env.pop("PYTHONHOME", None)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
        check=True,
        env=env,
        timeout=600,
    )
    wheels = list((tmp_path / "dist").glob("mflows-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "mflows/configs/power_mf_alternating.toml" in names
    assert "mflows/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    vpip = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
    import torch

    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    subprocess.run([*vpip, torch_pin], check=True, env=env, timeout=1200)
    subprocess.run([*vpip, str(wheels[0])], check=True, env=env, timeout=1200)
    check = subprocess.run(
        [str(bin_dir / "python"), "-c", "import mflows, sys; print(mflows.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert str(venv) in check.stdout  # the installed copy, not the source tree
    demo = subprocess.run(
        [str(bin_dir / "mflows"), "demo", "--quick", "--quiet", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").is_file()
    assert "reconstruction_error" in demo.stdout
    names = subprocess.run(
        [str(bin_dir / "mflows"), "config", "list"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout.split()  # fmt: skip
    assert "power_mf_alternating" in names
