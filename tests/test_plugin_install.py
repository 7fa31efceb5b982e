"""Each plugin under plugins/ (the bundled workloads and the integrations) installs alone into an
environment that has only pipeforge, shows up in `list-plugins` with the components it promises,
and uninstalling it removes only its components.

The environment is a new virtualenv that sees this one's site-packages *minus* every bundled
plugin (a folder of links to everything else), so the test needs no download.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, cli_env

pytestmark = pytest.mark.slow  # subprocess-heavy: `-m "not slow"` leaves it out

PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
PLUGIN_ENTRY = re.compile(r"pipeforge_[a-z]")  # pipeforge_<x> packages, dist-infos, .pth files
# The kinds each plugin registers; a workload plugin registers a model and a dataset.
KINDS = {"pipeforge-mlflow": {"callback"}, "pipeforge-torchmetrics": {"metric"}, "pipeforge-timm": {"model"}}


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> Path:
    """A virtualenv with pipeforge and its dependencies but none of the bundled plugins."""
    root = tmp_path_factory.mktemp("bare")
    shared = root / "shared-site"
    shared.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        if not PLUGIN_ENTRY.search(entry.name):
            (shared / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_site = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # addsitedir (not a plain path line) so the .pth files in there, e.g. editable installs, apply.
    (venv_site / "zz_shared.pth").write_text(f"import site; site.addsitedir({str(shared)!r})\n")
    return venv


def plugins_in(venv: Path) -> dict[str, dict]:
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pipeforge", "list-plugins", "--json"],
                            capture_output=True, text=True, env=cli_env(), check=True)
    return {p["name"]: p for p in json.loads(result.stdout)["plugins"]}


def pip(venv: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args,
                    "--quiet", "--disable-pip-version-check"],
                   check=True, capture_output=True, text=True)


def test_bare_env_has_only_the_builtins(bare_env):
    assert set(plugins_in(bare_env)) == {"builtin"}


@pytest.mark.parametrize("plugin_dir", PLUGINS, ids=[p.name for p in PLUGINS])
def test_plugin_installs_alone_and_uninstalls_cleanly(plugin_dir, bare_env):
    dist = plugin_dir.name
    builtin_before = plugins_in(bare_env)["builtin"]["components"]
    pip(bare_env, "install", "--no-deps", "--no-build-isolation", str(plugin_dir))
    try:
        found = plugins_in(bare_env)
        ours = [p for p in found.values() if p["distribution"] == dist]
        assert len(ours) == 1 and ours[0]["status"] == "ok", found
        assert set(found) == {"builtin", ours[0]["name"]}
        kinds = ours[0]["components"]
        assert {kind for kind, names in kinds.items() if names} == KINDS.get(dist, {"model", "dataset"}), kinds
        assert all(name.startswith(ours[0]["name"] + ".") for names in kinds.values() for name in names)
    finally:
        pip(bare_env, "uninstall", "--yes", dist)
    after = plugins_in(bare_env)
    assert set(after) == {"builtin"} and after["builtin"]["components"] == builtin_before
