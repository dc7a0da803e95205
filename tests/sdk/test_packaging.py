"""The SDK as a user gets it: the wheel builds, and a fresh virtualenv with only `pip install sdk/python`
imports it and runs the README's quick start against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import Server

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"


def quick_start() -> str:
    """The first Python block of sdk/python/README.md's quick start."""
    readme = (SDK / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's quick start has no python block"
    return match.group(1)


def test_the_wheel_builds_with_its_type_marker(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(SDK)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("lunogram-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lunogram/py.typed" in names
    assert "lunogram/__init__.py" in names


@pytest.mark.timeout(600)
def test_a_fresh_venv_runs_the_readme_quick_start(tmp_path: Path, server: Server) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(SDK)], check=True, timeout=300)
    listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert "lunogram" in listed
    assert "lunogram-server" not in listed  # nothing of the server came along

    # the README's key is a placeholder: the environment supplies the real key and the self-hosted base URL
    code = quick_start().replace('lunogram.Client("sk_your_secret_key")', "lunogram.Client()")
    env = {**os.environ, "LUNOGRAM_API_KEY": server.secret_key, "LUNOGRAM_BASE_URL": server.base_url}
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
