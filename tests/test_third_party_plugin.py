"""A plugin shipped as its own distribution: built, installed, discovered, used by a recipe.

Also: a plugin that fails to import is isolated, and a name claimed twice is an error naming both.
Each distribution is installed with pip into its own folder and put on PYTHONPATH, which is how
importlib.metadata finds installed distributions — no change to the test environment itself.
"""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest

from conftest import cli_env, run_pipeforge
from plugin_dists import make_dist, pip_install
from pipeforge.plugins import discover

pytestmark = pytest.mark.slow  # subprocess-heavy: `-m "not slow"` leaves it out

GOOD_PLUGIN = '''
from pipeforge import Component, Params, hookimpl
from pydantic import Field


class TinyParams(Params):
    in_features: int = Field(description="Inputs.")
    hidden: int = Field(8, ge=1, description="Hidden units.")


def build_tiny(params, context):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(params.in_features, params.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(params.hidden, context.datasets.num_classes),
    )


@hookimpl
def register_components():
    return [Component("model", "acme.tiny", TinyParams, build_tiny, "A tiny two-layer net.")]
'''

BROKEN_PLUGIN = '''
import missing_dependency_of_broken_plugin  # not installed: importing this plugin fails
'''

RECIPE = """
[run]
name = "acme"

[dataset]
name = "synthetic_classification"
features = 8
classes = 2

[model]
name = "{model}"
in_features = 8

[optimizer]
name = "sgd"
lr = 0.1

[trainer]
epochs = 3
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dists")
    sources = {
        "good": make_dist(root, "pipeforge-acme", "acme", "pipeforge_acme", GOOD_PLUGIN),
        "broken": make_dist(root, "pipeforge-broken", "broken", "pipeforge_broken", BROKEN_PLUGIN),
        "fork": make_dist(root, "pipeforge-acme-fork", "acme", "pipeforge_acme_fork", GOOD_PLUGIN, "9.9"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:  # pip processes, two at a time (CI has two cores)
        installs = {name: pool.submit(pip_install, source, root / f"site-{name}") for name, source in sources.items()}
        return {name: install.result() for name, install in installs.items()}


def env_with(*paths: Path) -> dict[str, str]:
    return cli_env(PYTHONPATH=":".join(str(p) for p in paths))


def recipe(tmp_path: Path, model: str) -> Path:
    path = tmp_path / f"{model}.toml"
    path.write_text(RECIPE.format(model=model))
    return path


def test_installed_plugin_is_listed_and_used_by_a_recipe(sites, tmp_path):
    env = env_with(sites["good"])
    listing = json.loads(run_pipeforge("list-plugins", "--json", env=env).stdout)
    acme = next(p for p in listing["plugins"] if p["name"] == "acme")
    assert (acme["distribution"], acme["version"], acme["status"]) == ("pipeforge-acme", "1.2.3", "ok")
    assert acme["components"] == {"model": ["acme.tiny"]}
    result = run_pipeforge("run", recipe(tmp_path, "acme.tiny"), "--run-dir", tmp_path / "run", env=env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_accuracy"] > 0.8
    env_json = json.loads((tmp_path / "run" / "env.json").read_text())
    assert {"name": "acme", "distribution": "pipeforge-acme", "version": "1.2.3", "status": "ok"} in env_json["plugins"]


def test_without_the_plugin_the_recipe_is_refused(tmp_path):
    result = run_pipeforge("validate", recipe(tmp_path, "acme.tiny"))
    assert result.returncode == 2
    assert "model.name (line 11): no model named 'acme.tiny' is registered" in result.stderr


def test_broken_plugin_is_isolated(sites, tmp_path):
    env = env_with(sites["good"], sites["broken"])
    listing = run_pipeforge("list-plugins", "--json", env=env)
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert plugins["broken"]["status"] == "broken"
    assert "missing_dependency_of_broken_plugin" in plugins["broken"]["error"]
    assert plugins["acme"]["status"] == "ok" and plugins["builtin"]["status"] == "ok"

    # The rest keep working, with one warning naming the distribution and the error.
    ok = run_pipeforge("validate", recipe(tmp_path, "acme.tiny"), env=env)
    assert ok.returncode == 0, ok.stderr
    warnings = [line for line in ok.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "pipeforge-broken" in warnings[0] and "missing_dependency_of_broken_plugin" in warnings[0]

    # A recipe that needs the broken plugin fails with exit 2, naming it and its error.
    needs = run_pipeforge("run", recipe(tmp_path, "broken.net"), "--run-dir", tmp_path / "r", env=env)
    assert needs.returncode == 2
    assert "plugin 'broken' from pipeforge-broken 1.2.3" in needs.stderr
    assert "missing_dependency_of_broken_plugin" in needs.stderr
    assert "Traceback" not in needs.stderr
    assert not (tmp_path / "r").exists()


def test_same_plugin_name_from_two_distributions_is_an_error_naming_both(sites, tmp_path):
    env = env_with(sites["good"], sites["fork"])
    plugins = [p for p in json.loads(run_pipeforge("list-plugins", "--json", env=env).stdout)["plugins"] if p["name"] == "acme"]
    assert {p["distribution"] for p in plugins} == {"pipeforge-acme", "pipeforge-acme-fork"}
    assert {p["status"] for p in plugins} == {"conflict"}
    result = run_pipeforge("validate", recipe(tmp_path, "acme.tiny"), env=env)
    assert result.returncode == 2
    assert "pipeforge-acme 1.2.3" in result.stderr and "pipeforge-acme-fork 9.9" in result.stderr


# ---------------------------------------------------------------- in-process registry rules


def entry_point(name: str, module: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=module, group="pipeforge")


def test_unnamespaced_or_malformed_registrations_mark_the_plugin_broken(tmp_path, monkeypatch):
    (tmp_path / "bare_plugin.py").write_text(textwrap.dedent('''
        from pipeforge import Component, NoParams, hookimpl

        @hookimpl
        def register_components():
            return [Component("model", "tiny", NoParams, "x:y")]
    '''))
    (tmp_path / "wrong_kind_plugin.py").write_text(textwrap.dedent('''
        from pipeforge import Component, NoParams, hookimpl

        @hookimpl
        def register_components():
            return [Component("modle", "wk.tiny", NoParams, "x:y")]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = discover([entry_point("bare", "bare_plugin"), entry_point("wk", "wrong_kind_plugin")])
    status = {p.name: (p.status, p.error) for p in plugins.registry.plugins}
    assert status["bare"][0] == "broken" and "must be namespaced" in status["bare"][1] and "bare.tiny" in status["bare"][1]
    assert status["wk"][0] == "broken" and "kind 'modle'" in status["wk"][1]
    assert plugins.registry.all_components() == []


def test_a_name_registered_twice_is_unusable_and_names_both(tmp_path, monkeypatch):
    (tmp_path / "twice_plugin.py").write_text(textwrap.dedent('''
        from pipeforge import Component, NoParams, hookimpl

        @hookimpl
        def register_components():
            return [Component("loss", "tw.l1", NoParams, "x:y"), Component("loss", "tw.l1", NoParams, "x:z"),
                    Component("loss", "tw.l2", NoParams, "x:w")]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = discover([entry_point("tw", "twice_plugin")]).registry
    assert registry.find("loss", "tw.l1") is None
    assert "registered by both" in registry.why_missing("loss", "tw.l1")
    assert registry.find("loss", "tw.l2") is not None
