"""The README's set-up commands and .ci/run must stay the same commands."""

from __future__ import annotations

import re

from conftest import ROOT


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2, lines
    install, test = lines
    return [part.strip() for part in install.split("&&")] + [test.strip()]


def test_ci_runs_exactly_the_readme_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    steps = [line for line in ci if line not in ("set -euo pipefail", 'cd "$(dirname "$0")/.."')]
    assert steps == readme_commands()


def test_the_version_is_the_one_pyproject_declares():
    import tomllib

    import pipeforge

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert pipeforge.__version__ == declared
