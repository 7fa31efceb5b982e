"""The plugin author's kit: `new-plugin`, `check-plugin`, the pytest fixtures and the guide.

The slow tests do what docs/writing-plugins.md tells an author to do, command by command, in a
temporary folder: scaffold a plugin, install it, run its generated tests, train its recipe,
predict, check it, build a wheel and install that. Installs go with `pip --target` into folders
put on PYTHONPATH (see plugin_dists.py), never into the test environment: `pip install -e X`
is run as a (non-editable) install of X into such a folder. Then check-plugin is shown to catch
each kind of broken plugin, each made by editing a scaffolded copy.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import BIN, ROOT, cli_env, run_in_process, run_pipeforge
from pipeforge import Callback, Component, Metric, NoParams, PluginError, UsageError, __version__
from pipeforge.kit.report import CheckReport
from pipeforge.kit.scaffold import new_plugin, render, supported_versions
from pipeforge.registry import PluginInfo, Registry

DOC = ROOT / "docs" / "writing-plugins.md"


def doc_commands() -> list[str]:
    """Every command docs/writing-plugins.md shows (a line starting with `$ `), in order."""
    return [line[2:].strip() for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("$ ")]


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]


# ------------------------------------------------------------------------------ new-plugin


@pytest.mark.parametrize("name", ["Acme", "1acme", "acme-plugin", "acme.x", "", "builtin", "a" * 41, "ac me"])
def test_new_plugin_refuses_a_name_that_cannot_be_a_plugin_and_writes_nothing(tmp_path, name):
    target = tmp_path / "plugin"
    with pytest.raises(UsageError, match="plugin"):
        new_plugin(name, target)
    assert not target.exists()


def test_new_plugin_refuses_a_folder_that_is_not_empty_and_changes_nothing(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    result = run_pipeforge("new-plugin", "acme", "--dir", target, cwd=tmp_path)
    assert result.returncode == 2
    assert "not empty" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "empty folder"])
def test_new_plugin_that_fails_while_writing_leaves_the_folder_as_it_was(tmp_path, monkeypatch, existing):
    from pipeforge.kit import scaffold

    target = tmp_path / "pipeforge-acme"
    if existing:
        target.mkdir()
    written = []

    def open_until_full(path, *args, **kwargs):  # the disk fills up at the fourth file
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(path)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(scaffold, "open", open_until_full, raising=False)
    with pytest.raises(UsageError, match="No space left on device"):
        new_plugin("acme", target)
    assert len(written) == 3
    assert (sorted(target.iterdir()) == []) if existing else not target.exists()


def test_new_plugin_writes_a_complete_plugin(tmp_path):
    folder = new_plugin("shapes", tmp_path / "pipeforge-shapes")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == set(render("shapes")) == {
        "pyproject.toml", "README.md", "recipes/shapes.toml", "examples/vertical.json", "tests/test_shapes.py",
        *(f"src/pipeforge_shapes/{m}.py" for m in ("__init__", "plugin", "build", "predict")),
    }
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["build-system"]["build-backend"] == "hatchling.build"
    assert project["project"]["name"] == "pipeforge-shapes"
    assert project["project"]["dependencies"] == [supported_versions()] == ["pipeforge>=0.1,<0.2"]
    assert project["project"]["entry-points"]["pipeforge"] == {"shapes": "pipeforge_shapes.plugin"}
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/pipeforge_shapes"]
    recipe = (folder / "recipes" / "shapes.toml").read_text()
    assert recipe.startswith("# Run with: pipeforge run recipes/shapes.toml\n")
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"\$\{?(name|package|dist|requires)\b", text), f"{path} has an unfilled placeholder"
            if path.suffix == ".py":
                compile(text, str(path), "exec")
    registration = (folder / "src" / "pipeforge_shapes" / "plugin.py").read_text()
    assert "torch" not in re.findall(r"^\s*(?:import|from)\s+(\w+)", registration, re.M)


# ------------------------------------------------------------------------------ check-plugin, fast


def test_check_plugin_names_no_installed_plugin_with_exit_2(tmp_path):
    result = run_pipeforge("check-plugin", "popularty", cwd=tmp_path)
    assert result.returncode == 2
    assert "no installed plugin is named 'popularty'" in result.stderr
    assert "did you mean 'popularity'" in result.stderr and "Traceback" not in result.stderr


def test_check_plugin_refuses_a_folder_whose_plugin_is_not_installed(tmp_path):
    folder = new_plugin("notinstalled", tmp_path / "pipeforge-notinstalled")
    result = run_pipeforge("check-plugin", folder, cwd=tmp_path)
    assert result.returncode == 2
    assert "the plugin 'notinstalled'" in result.stderr and "pip install -e" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("plugin, components", [
    ("popularity", {("dataset", "popularity.products"), ("model", "popularity.simplenet")}),
    ("builtin", {("dataset", "synthetic_classification"), ("model", "mlp"), ("optimizer", "adam"),
                 ("scheduler", "cosine"), ("scheduler", "reduce_on_plateau"), ("metric", "accuracy"),
                 ("callback", "early_stopping"), ("loss", "cross_entropy")}),
])
def test_check_plugin_passes_the_bundled_plugins(tmp_path, plugin, components):
    result = run_in_process("check-plugin", plugin, "--json", cwd=tmp_path)  # no second torch start-up
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == []
    passed = {(f["kind"], f["name"]) for f in report["passed"]}
    assert {("plugin", plugin), *components} <= passed


@pytest.mark.slow
def test_the_guide_s_worked_examples_pass_the_check(tmp_path):
    """The registration, builder and input-reader blocks of docs/writing-plugins.md, run as one
    plugin through check-plugin's component checks: every kind builds and works."""
    from pipeforge.kit.components import ComponentCheck
    from pipeforge.plugins import discover

    blocks = re.findall(r"```python\n(# src/.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    components = namespace["register_components"]()
    assert sorted(c.kind for c in components) == sorted(
        ["dataset", "model", "loss", "optimizer", "scheduler", "metric", "callback", "transform"])

    def local(ref):  # "pipeforge_acme.build:build_rings" -> the function the guide defines
        return None if ref is None else namespace[ref.partition(":")[2]]

    components = [dataclasses.replace(c, build=local(c.build), read_inputs=local(c.read_inputs)) for c in components]
    report = CheckReport(PluginInfo("acme", "pipeforge-acme", "0.1.0", "pipeforge_acme.plugin"))
    ComponentCheck(discover().registry, components, [], report, tmp_path).run()
    assert report.problems == [] and report.notes == []
    assert {(f.kind, f.name) for f in report.passed} == {(c.kind, c.name) for c in components}
    read = namespace["read_points"]
    assert tuple(read(None, ["[[0.9, 0.1], [2.5, -1.6]]"], None).shape) == (2, 2)
    with pytest.raises(Exception, match="expected a JSON list"):
        read(None, ["[[1, 2, 3]]"], None)


# ------------------------------------------------------------------------------ pytest fixtures


def test_build_component_keeps_the_dataset_so_a_model_is_sized_to_it(build_component, tiny_context):
    data = build_component("dataset", "synthetic_classification", n_train=8, n_val=4, features=5, classes=4)
    assert tiny_context.datasets is data and tiny_context.device == "cpu" and tiny_context.seed == 0
    model = build_component("model", "mlp", in_features=5)
    inputs, _ = data.splits["train"][:3]
    assert model(inputs).shape == (3, 4)
    assert isinstance(build_component("metric", "accuracy"), Metric)
    assert isinstance(build_component("callback", "early_stopping"), Callback)


def test_build_component_refuses_what_breaks_the_contract(build_component, tiny_context):
    class Nameless(Metric):
        def reset(self): ...
        def update(self, outputs, targets): ...
        def compute(self): return 0.0

    class Typo(Callback):
        def on_epoch_ended(self, state, epoch, metrics): ...

    registry = Registry()
    owner = PluginInfo("x", "pipeforge-x", "1.0", "x.plugin")
    registry.add(Component("metric", "x.nameless", NoParams, lambda params, context: Nameless()), owner)
    registry.add(Component("callback", "x.typo", NoParams, lambda params, context: Typo()), owner)
    registry.add(Component("dataset", "x.list", NoParams, lambda params, context: [1, 2]), owner)
    tiny_context.registry = registry
    with pytest.raises(PluginError, match=r"metric 'x.nameless'.*`name`"):
        build_component("metric", "x.nameless")
    with pytest.raises(PluginError, match=r"'on_epoch_ended' is not a pipeforge hook; did you mean 'on_epoch_end'"):
        build_component("callback", "x.typo")
    with pytest.raises(PluginError, match=r"returned list, expected pipeforge.Datasets"):
        build_component("dataset", "x.list")


def test_pipeforge_run_trains_into_tmp_path_on_one_thread(pipeforge_run, tmp_path):
    import torch

    threads = torch.get_num_threads()
    recipe = {
        "run": {"name": "fixture"},
        "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 32, "features": 4, "classes": 2},
        "model": {"name": "mlp", "in_features": 4},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "trainer": {"epochs": 3, "device": "cpu"},
        "callbacks": [],
    }
    result = pipeforge_run(recipe, overrides=["trainer.epochs=2"])
    assert result.run_dir.parent.parent == tmp_path
    assert (result.run_dir / "model.pt").is_file() and [row["epoch"] for row in result.history] == [1, 2]
    assert pipeforge_run(recipe).run_dir != result.run_dir  # every call gets its own run dir
    assert torch.get_num_threads() == threads


def test_the_kit_imports_no_torch():
    code = ("import sys, pipeforge.kit.pytest_plugin, pipeforge.kit.scaffold, pipeforge.kit.check, "
            "pipeforge.cli_kit; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------ the guide, run


class Author:
    """Runs the guide's commands as an author would, from one folder; pip installs go into
    folders on PYTHONPATH (the first for `pip install -e`, another for the wheel)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site-editable"
        self.results: dict[str, subprocess.CompletedProcess] = {}

    def argv(self, command: str) -> list[str]:
        words = shlex.split(command)
        if words[:3] == ["pip", "install", "-e"]:
            return pip("install", "--no-deps", "--no-build-isolation", "--target", str(self.site), *words[3:])
        if words[:2] == ["pip", "install"]:  # a built wheel: from now on, the installed wheel
            self.site = self.root / "site-wheel"
            return pip("install", "--no-deps", "--target", str(self.site), *words[2:])
        if words[:2] == ["pip", "wheel"]:
            return pip("wheel", "--no-build-isolation", *words[2:])
        if words[0] == "pytest":
            return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *words[1:]]
        assert words[0] == "pipeforge", f"the test does not know how to run {command!r}"
        return [str(BIN / "pipeforge"), *words[1:]]

    def run(self, command: str) -> subprocess.CompletedProcess:
        argv = self.argv(command)
        result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=900,
                                env=cli_env(PYTHONPATH=str(self.site)), stdin=subprocess.DEVNULL)
        self.results[command] = result
        return result

    def run_all(self, commands: list[str]) -> None:
        """Every command, stage after stage (see `stages`), the two lanes of a stage at once;
        `results` in the guide's order."""
        for stage in stages(commands):
            with ThreadPoolExecutor(max_workers=2) as pool:
                for lane in [pool.submit(lambda lane=lane: [self.run(c) for c in lane]) for lane in stage]:
                    lane.result()
        self.results = {command: self.results[command] for command in commands}


LIGHT = (["pipeforge", "new-plugin"], ["pipeforge", "validate"], ["pipeforge", "show"], ["pipeforge", "list-plugins"])


def stages(commands: list[str]) -> list[list[list[str]]]:
    """The guide's commands as stages of at most two lanes, each lane in the guide's order. A
    `pip install` changes what the later commands find installed: it is a stage of its own. The
    commands between two of them go into two lanes that run at once (most start torch, and CI
    has two cores), the lighter lane taking the next one, except that a command naming the run
    dir of a `pipeforge run` goes after it, in its lane."""
    found: list[list[list[str]]] = []
    lanes: list[list[str]] = [[], []]
    load, run_dirs = [0, 0], [set(), set()]
    for command in commands:
        words = shlex.split(command)
        if words[:2] == ["pip", "install"]:
            found += [[lane for lane in lanes if lane], [[command]]]
            lanes, load, run_dirs = [[], []], [0, 0], [set(), set()]
            continue
        lane = next((i for i in (0, 1) if run_dirs[i] & set(words)), 0 if load[0] <= load[1] else 1)
        lanes[lane].append(command)
        load[lane] += 1 if words[:2] in LIGHT else 5
        if words[:2] == ["pipeforge", "run"] and "--run-dir" in words:
            run_dirs[lane].add(words[words.index("--run-dir") + 1])
    found.append([lane for lane in lanes if lane])
    return [stage for stage in found if stage]


@pytest.fixture(scope="module")
def author(tmp_path_factory) -> Author:
    author = Author(tmp_path_factory.mktemp("author"))
    author.run_all(doc_commands())
    for command, result in author.results.items():
        assert result.returncode == 0, f"$ {command}\n{result.stdout}\n{result.stderr}"
    return author


def result_of(author: Author, prefix: str) -> subprocess.CompletedProcess:
    [found] = [result for command, result in author.results.items() if command.startswith(prefix)]
    return found


@pytest.mark.slow
def test_the_guide_goes_from_new_plugin_to_an_installed_wheel():
    commands = doc_commands()
    firsts = [" ".join(c.split()[:2]) for c in commands]
    for step in ("pipeforge new-plugin", "pip install", "pytest ./pipeforge-acme/tests", "pipeforge run",
                 "pipeforge predict", "pipeforge check-plugin", "pip wheel"):
        assert any(c.startswith(step) for c in commands), step
    assert firsts.index("pipeforge new-plugin") == 0 and firsts.index("pip wheel") < len(firsts) - 1


@pytest.mark.slow
def test_every_command_of_the_guide_runs(author):
    assert list(author.results) == doc_commands()
    assert all(result.returncode == 0 for result in author.results.values())


@pytest.mark.slow
def test_new_plugin_prints_the_guide_s_next_commands(author):
    printed = result_of(author, "pipeforge new-plugin").stdout
    following = printed.split("next:\n", 1)[1].split("\n")
    steps = [line.strip() for line in following if line.strip()]
    assert len(steps) == 5 and all(step in doc_commands() for step in steps)


@pytest.mark.slow
def test_the_scaffold_s_generated_tests_pass(author):
    output = result_of(author, "pytest").stdout
    assert re.search(r"\b4 passed\b", output) and "failed" not in output, output


@pytest.mark.slow
def test_the_scaffold_s_recipe_trains_a_model_that_learned(author):
    run_dir = author.root / "runs" / "acme"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and rows[-1]["val_accuracy"] > 0.9 and rows[-1]["val_macro_f1"] > 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert (run_dir / "model.pt").is_file()
    with open(run_dir / "acme_metrics.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    assert result_of(author, "pipeforge predict").stdout.split() == ["vertical"]


@pytest.mark.slow
def test_check_plugin_finds_no_problem_in_the_scaffold(author):
    text = result_of(author, "pipeforge check-plugin ./").stdout
    assert "no problems" in text and "problem " not in text
    report = json.loads(result_of(author, "pipeforge check-plugin acme --json").stdout)
    assert report["ok"] is True and report["problems"] == [] and report["notes"] == []
    assert {(f["kind"], f["name"]) for f in report["passed"]} == {
        ("plugin", "acme"), ("dataset", "acme.stripes"), ("model", "acme.convnet"),
        ("metric", "acme.macro_f1"), ("callback", "acme.csv_log"),
    }


@pytest.mark.slow
def test_the_wheel_installs_a_working_plugin(author):
    [wheel] = (author.root / "dist").glob("pipeforge_acme-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {"pipeforge_acme/plugin.py", "pipeforge_acme/build.py", "pipeforge_acme/predict.py"} <= set(names)
    listing = result_of(author, "pipeforge list-plugins").stdout
    assert re.search(r"acme\s.*pipeforge-acme\s.*0\.1\.0\s.*ok", listing), listing


# ------------------------------------------------------------------------------ check-plugin catches


# name → (file in the plugin, text, replacement, the component named, words in its message)
SRC = "src/pipeforge_acme"
BREAKAGES = {
    "metric without name": (f"{SRC}/build.py", '    name = "macro_f1"\n', "",
                            "metric 'acme.macro_f1'", "`name` must be a key"),
    "callback hook typo": (f"{SRC}/build.py", "def on_epoch_end(self, state: RunState, epoch",
                           "def on_epoch_ended(self, state: RunState, epoch",
                           "callback 'acme.csv_log'", "'on_epoch_ended' is not a pipeforge hook; did you mean 'on_epoch_end'?"),
    "model width": (f"{SRC}/build.py", "nn.Linear(channels, classes)", "nn.Linear(channels, classes + 2)",
                    "model 'acme.convnet'", "outputs 5 values per sample, but dataset 'acme.stripes' has 3 classes"),
    "builder pointing nowhere": (f"{SRC}/plugin.py", ':build_convnet"', ':build_convnet_v2"',
                                 "model 'acme.convnet'", "cannot load its builder 'pipeforge_acme.build:build_convnet_v2'"),
    "registration imports torch": (f"{SRC}/plugin.py", "from pydantic import Field\n", "from pydantic import Field\nimport torch\n",
                                   "plugin 'acme'", "imports torch (via pipeforge_acme/plugin.py:"),
    "unsupported pipeforge version": ("pyproject.toml", '"pipeforge>=0.1,<0.2"', '"pipeforge>=9.0,<10"',
                                      "plugin 'acme'", f"requires pipeforge<10,>=9.0, but pipeforge {__version__} is installed"),
    "dataset returns the wrong type": (
        f"{SRC}/build.py", "return Datasets(splits={", "return dict(splits={",
        "dataset 'acme.stripes'", "returned dict, expected pipeforge.Datasets"),
}


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory) -> Path:
    return new_plugin("acme", tmp_path_factory.mktemp("scaffold") / "pipeforge-acme")


def broken_copy(scaffold: Path, root: Path, file: str, text: str, replacement: str) -> Path:
    """A copy of the scaffold with one edit, installed into its own folder; returns that folder."""
    copy = root / "pipeforge-acme"
    shutil.copytree(scaffold, copy)
    path = copy / file
    source = path.read_text()
    assert text in source, f"the scaffold's {file} no longer has {text!r}"
    path.write_text(source.replace(text, replacement, 1))
    site = root / "site"
    subprocess.run(pip("install", "--no-deps", "--no-build-isolation", "--target", str(site), str(copy)),
                   check=True, capture_output=True, text=True)
    return site


def two_at_a_time(jobs: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each job's result, by name, the jobs run two at a time: each installs a copy with pip and
    runs check-plugin, a process that imports torch, and CI has two cores."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def check_broken(scaffold: Path, root: Path, breakage: str) -> subprocess.CompletedProcess:
    """`pipeforge check-plugin FOLDER` on a copy of the scaffold with the edit BREAKAGES names."""
    file, text, replacement, _, _ = BREAKAGES[breakage]
    site = broken_copy(scaffold, root, file, text, replacement)
    return run_pipeforge("check-plugin", root / "pipeforge-acme", cwd=root, env=cli_env(PYTHONPATH=str(site)))


def check_required_params(scaffold: Path, root: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`check-plugin acme --json` on a copy whose model has a required param: once with the
    shipped recipe in the folder pip recorded, once after that recipe is removed."""
    required = ('channels: int = Field(8, ge=1', 'channels: int = Field(ge=1')
    site = broken_copy(scaffold, root, f"{SRC}/plugin.py", *required)
    with_recipe = run_pipeforge("check-plugin", "acme", "--json", cwd=root, env=cli_env(PYTHONPATH=str(site)))
    shutil.rmtree(root / "pipeforge-acme" / "recipes")  # the folder pip recorded: no recipe now
    without = run_pipeforge("check-plugin", "acme", "--json", cwd=root, env=cli_env(PYTHONPATH=str(site)))
    return with_recipe, without


@pytest.fixture(scope="module")
def checked(scaffold, tmp_path_factory) -> dict[str, Any]:
    """Every broken copy of BREAKAGES, and the required-params copy, installed and checked, each
    in its own folder (the folder holds the copy, `site` its install)."""
    roots = {name: tmp_path_factory.mktemp("broken") for name in [*BREAKAGES, "required params"]}
    jobs: dict[str, Callable[[], Any]] = {
        name: functools.partial(check_broken, scaffold, roots[name], name) for name in BREAKAGES}
    jobs["required params"] = functools.partial(check_required_params, scaffold, roots["required params"])
    return {name: (roots[name], result) for name, result in two_at_a_time(jobs).items()}


@pytest.mark.slow
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_check_plugin_catches_and_names_the_component(checked, breakage):
    _, _, _, component, words = BREAKAGES[breakage]
    _, result = checked[breakage]
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("problem ")]
    assert len(problems) == 1, result.stdout
    assert problems[0].startswith(f"problem {component}: ") and words in problems[0], problems[0]
    assert "1 problem" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_plugin_builds_required_params_from_the_shipped_recipe_and_notes_them_without_one(checked):
    _, (result, without_recipe) = checked["required params"]  # see check_required_params
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["notes"] == []
    assert {"kind": "model", "name": "acme.convnet"}.items() <= next(
        f for f in report["passed"] if f["name"] == "acme.convnet").items()
    result = without_recipe
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["problems"] == []
    [note] = report["notes"]
    assert (note["kind"], note["name"]) == ("model", "acme.convnet") and "required params (channels)" in note["message"]


@pytest.mark.slow
def test_the_pipeforge_wheel_ships_the_templates_and_the_pytest_plugin(tmp_path):
    subprocess.run(pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)),
                   check=True, capture_output=True, text=True)
    [wheel] = tmp_path.glob("pipeforge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")]
    templates = {f"pipeforge/kit/template/{name}" for name in
                 ("plugin.py.tmpl", "build.py.tmpl", "predict.py.tmpl", "pyproject.toml.tmpl", "recipe.toml.tmpl",
                  "test_plugin.py.tmpl", "README.md.tmpl", "__init__.py.tmpl", "vertical.json.tmpl")}
    assert templates <= names
    assert "[pytest11]\npipeforge = pipeforge.kit.pytest_plugin" in entry_points


@pytest.mark.slow
def test_list_plugins_flags_a_plugin_that_does_not_support_this_pipeforge(checked, tmp_path):
    *_, words = BREAKAGES["unsupported pipeforge version"]
    root, _ = checked["unsupported pipeforge version"]  # that copy, installed in root / "site"
    listing = run_pipeforge("list-plugins", "--json", cwd=tmp_path, env=cli_env(PYTHONPATH=str(root / "site")))
    assert listing.returncode == 0, listing.stderr
    [acme] = [p for p in json.loads(listing.stdout)["plugins"] if p["name"] == "acme"]
    assert acme["status"] == "incompatible" and words in acme["error"]
    popularity = [p for p in json.loads(listing.stdout)["plugins"] if p["name"] == "popularity"]
    assert popularity[0]["status"] == "ok"  # a plugin that declares a range pipeforge is in
