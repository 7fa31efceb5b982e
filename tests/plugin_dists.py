"""Build and install small plugin distributions for tests, each into its own folder.

A folder installed with `pip install --target` and put on PYTHONPATH is found by
importlib.metadata like any installed distribution, so tests never change the test environment.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "{version}"
dependencies = ["pipeforge"]

[project.entry-points.pipeforge]
{ep} = "{package}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]
"""

def make_dist(root: Path, dist: str, ep: str, package: str, code: str, version: str = "1.2.3") -> Path:
    src = root / dist
    (src / "src" / package).mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, ep=ep, package=package, version=version))
    (src / "src" / package / "__init__.py").write_text("")
    (src / "src" / package / "plugin.py").write_text(textwrap.dedent(code))
    return src


def pip_install(source: Path, target: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    return target
