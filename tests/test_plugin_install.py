"""Each plugin under plugins/ (the bundled workloads and the integrations) installs alone into an
environment that has only pipeforge, shows up in `list-plugins` with the components it promises,
and uninstalling it removes only its components.

The environment is a new virtualenv that sees this one's site-packages *minus* every bundled
plugin (a folder of links to everything else), so the test needs no download. Each plugin gets
an environment of its own, so that two plugins are tried at once (pip and `list-plugins` are
processes, and CI has two cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from concurrent.futures import Future, ThreadPoolExecutor
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
    return make_bare_env(tmp_path_factory.mktemp("bare"))


def make_bare_env(root: Path) -> Path:
    """A virtualenv with pipeforge and its dependencies but none of the bundled plugins."""
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


def install_and_uninstall(plugin_dir: Path, venv: Path) -> dict[str, dict]:
    """`list-plugins` in `venv` before the plugin is installed, with it, and after it is
    uninstalled again."""
    seen = {"before": plugins_in(venv)}
    pip(venv, "install", "--no-deps", "--no-build-isolation", str(plugin_dir))
    try:
        seen["installed"] = plugins_in(venv)
    finally:
        pip(venv, "uninstall", "--yes", plugin_dir.name)
    seen["after"] = plugins_in(venv)
    return seen


@pytest.fixture(scope="module")
def installed_alone(tmp_path_factory) -> dict[str, Future]:
    """Each bundled plugin installed and uninstalled in a bare environment of its own, two at a
    time; a test takes its plugin's `result()` (which raises what that plugin's steps raised)."""
    venvs = {p.name: make_bare_env(tmp_path_factory.mktemp(p.name)) for p in PLUGINS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {p.name: pool.submit(install_and_uninstall, p, venvs[p.name]) for p in PLUGINS}
    return futures


@pytest.mark.parametrize("plugin_dir", PLUGINS, ids=[p.name for p in PLUGINS])
def test_plugin_installs_alone_and_uninstalls_cleanly(plugin_dir, installed_alone):
    dist = plugin_dir.name
    seen = installed_alone[dist].result()
    builtin_before = seen["before"]["builtin"]["components"]
    found = seen["installed"]
    ours = [p for p in found.values() if p["distribution"] == dist]
    assert len(ours) == 1 and ours[0]["status"] == "ok", found
    assert set(found) == {"builtin", ours[0]["name"]}
    kinds = ours[0]["components"]
    assert {kind for kind, names in kinds.items() if names} == KINDS.get(dist, {"model", "dataset"}), kinds
    assert all(name.startswith(ours[0]["name"] + ".") for names in kinds.values() for name in names)
    after = seen["after"]
    assert set(after) == {"builtin"} and after["builtin"]["components"] == builtin_before
