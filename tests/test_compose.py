"""Recipe composition (`include = [...]`): merging, arrays replaced whole, refused includes,
errors naming the file and line a key came from, and the flattened recipe reproducing a run."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

import pipeforge
from conftest import RECIPES, run_pipeforge
from pipeforge.cli import main
from pipeforge.compose import MAX_INCLUDE_DEPTH, compose
from pipeforge.errors import RecipeError
from pipeforge.plugins import discover
from pipeforge.recipe import load_recipe
from pipeforge.recipe_lines import key_lines

BASE = """\
# the shared settings
[run]
name = "base"
seed = 3

[dataset]
name = "synthetic_classification"
n_train = 96
n_val = 32
features = 4

[model]
name = "mlp"
in_features = 4
hidden = [8, 8]

[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9

[trainer]
epochs = 2
batch_size = 16
device = "cpu"

[[metrics]]
name = "accuracy"

[[metrics]]
name = "accuracy"
top_k = 2
"""


@pytest.fixture(scope="module")
def registry():
    return discover().registry


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path, registry, overrides=()) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry, list(overrides))
    return info.value


def test_tables_merge_key_by_key_and_the_including_file_wins(tmp_path):
    write(tmp_path, "common/base.toml", BASE)
    write(tmp_path, "common/fast.toml", '[optimizer]\nlr = 0.5\n[trainer]\nepochs = 5\n')
    # Nested: exp includes mid (in another folder), mid includes base and fast, relative to itself.
    write(tmp_path, "common/mid.toml", 'include = ["base.toml", "fast.toml"]\n[run]\nname = "mid"\n')
    exp = write(tmp_path, "exps/exp.toml", 'include = ["../common/mid.toml"]\n\n[trainer]\nepochs = 7\n')
    data = compose(exp).data
    assert "include" not in data
    assert data["run"] == {"name": "mid", "seed": 3}  # mid over base, base's other keys kept
    assert data["optimizer"] == {"name": "sgd", "lr": 0.5, "momentum": 0.9}  # fast over base
    assert data["trainer"] == {"epochs": 7, "batch_size": 16, "device": "cpu"}  # the file itself wins
    assert data["dataset"] == tomllib.loads(BASE)["dataset"]


def test_later_includes_win_over_earlier_ones(tmp_path):
    write(tmp_path, "a.toml", '[optimizer]\nlr = 0.1\nmomentum = 0.5\n')
    write(tmp_path, "b.toml", '[optimizer]\nlr = 0.2\n')
    assert compose(write(tmp_path, "x.toml", 'include = ["a.toml", "b.toml"]\n')).data["optimizer"] == {
        "lr": 0.2, "momentum": 0.5}
    assert compose(write(tmp_path, "y.toml", 'include = ["b.toml", "a.toml"]\n')).data["optimizer"] == {
        "lr": 0.1, "momentum": 0.5}


def test_arrays_and_arrays_of_tables_are_replaced_whole(tmp_path, registry):
    write(tmp_path, "base.toml", BASE)
    exp = write(tmp_path, "exp.toml", 'include = ["base.toml"]\n[model]\nhidden = [5]\n'
                                      '[[metrics]]\nname = "accuracy"\n')
    data = compose(exp).data
    assert data["model"]["hidden"] == [5]  # not [5, 8], not [8, 8, 5]
    assert data["metrics"] == [{"name": "accuracy"}]  # both of base's metrics gone
    recipe = load_recipe(exp, registry)
    assert [spec.name for spec in recipe.metrics] == ["accuracy"]


def test_a_cycle_is_refused_naming_the_files(tmp_path, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "a.toml", 'include = ["b.toml"]\n')
    write(tmp_path, "b.toml", '# b\ninclude = ["sub/../a.toml"]\n')
    (tmp_path / "sub").mkdir()
    error = refusal(Path("a.toml"), registry)
    assert error.exit_code == 2 and error.source == "b.toml"
    (problem,) = error.problems
    assert problem.origin == "line 2" and "a.toml → " in problem.message and "cycle" in problem.message
    selfish = write(tmp_path, "self.toml", 'include = ["self.toml"]\n')
    assert "cycle" in refusal(selfish, registry).problems[0].message


def test_a_diamond_is_no_cycle(tmp_path):
    write(tmp_path, "base.toml", '[run]\nname = "d"\n')
    write(tmp_path, "left.toml", 'include = ["base.toml"]\n')
    write(tmp_path, "right.toml", 'include = ["base.toml"]\n')
    assert compose(write(tmp_path, "top.toml", 'include = ["left.toml", "right.toml"]\n')).data == {"run": {"name": "d"}}


@pytest.mark.parametrize("case", ["missing", "folder", "symlink", "fifo", "absolute", "not toml", "not a list"])
def test_an_include_that_cannot_be_read_names_the_file_and_line(case, tmp_path, registry):
    write(tmp_path, "base.toml", BASE)
    name = {"missing": "nope.toml", "folder": "dir.toml", "symlink": "link.toml", "fifo": "pipe.toml",
            "absolute": str(tmp_path / "base.toml"), "not toml": "/dev/zero", "not a list": None}[case]
    (tmp_path / "dir.toml").mkdir()
    (tmp_path / "link.toml").symlink_to(tmp_path / "base.toml")
    os.mkfifo(tmp_path / "pipe.toml")  # never opened for reading: that would block
    value = json.dumps([name]) if name else "3"
    exp = write(tmp_path, "exp.toml", f"# an experiment\ninclude = {value}\n")
    error = refusal(exp, registry)
    (problem,) = error.problems
    assert error.source == str(exp) and problem.path == "include" and problem.origin == "line 2"
    expected = {"missing": "No such file", "folder": "it is a folder", "symlink": "symbolic link",
                "fifo": "not a regular file", "absolute": "not a relative path", "not toml": "not a .toml file",
                "not a list": "expected an array of file names"}[case]
    assert expected in problem.message and (name is None or name in problem.message)


def test_includes_nest_only_so_deep(tmp_path):
    for level in range(MAX_INCLUDE_DEPTH + 2):
        write(tmp_path, f"l{level}.toml", f'include = ["l{level + 1}.toml"]\n')
    write(tmp_path, f"l{MAX_INCLUDE_DEPTH + 2}.toml", "")
    with pytest.raises(RecipeError, match="nest more than"):
        compose(tmp_path / "l0.toml")
    assert compose(tmp_path / "l2.toml").data == {}  # exactly MAX_INCLUDE_DEPTH deep is fine


def test_an_error_in_an_included_file_names_that_file_and_line(tmp_path, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages name files as found from the working directory
    write(tmp_path, "common/base.toml", BASE.replace("momentum = 0.9", "momentum = 2").replace(
        "top_k = 2", "top_k = 2\nweird = 1"))
    write(tmp_path, "exp.toml", 'include = ["common/base.toml"]\n\n[optimizer]\nlr = "fast"\n')
    exp = Path("exp.toml")
    error = refusal(exp, registry, overrides=["trainer.epochs=0"])
    where = {problem.path: problem.origin for problem in error.problems}
    lines = BASE.splitlines()
    momentum, weird = lines.index("momentum = 0.9") + 1, lines.index("top_k = 2") + 2
    assert where == {
        "optimizer.momentum": f"common/base.toml, line {momentum}",
        "optimizer.lr": "line 4",  # the including file's own line
        "trainer.epochs": "--set trainer.epochs=0",
        "metrics[1].weird": f"common/base.toml, line {weird}",
    }
    message = str(error)
    assert message.startswith(f"{exp}: 4 problems")
    assert f"optimizer.momentum (common/base.toml, line {momentum}): expected" in message
    # Not valid TOML in an included file: that file, its line and column, and who included it.
    write(tmp_path, "common/base.toml", "[run]\nname = \n")
    error = refusal(exp, registry)
    assert error.source == "common/base.toml (included by exp.toml)"
    assert error.problems[0].path == "line 2, column 8"


def test_key_lines_follows_toml_layout():
    text = '''\
title = """
fake = 1
"""  # still a comment
[a]
b.c = 1
"quoted key" = 'x'
list = [
  { fake = 2 },
]
[[arr]]
k = 1
[[arr]]
k = 2
[arr.sub]
z = 3
[ "spaced" . inner ]
v = 1
'''
    lines = key_lines(text, tomllib.loads(text))
    assert lines[("title",)] == 1 and ("fake",) not in lines
    assert lines[("a", "b", "c")] == 5 and lines[("a", "b")] == 5
    assert lines[("a", "quoted key")] == 6 and lines[("a", "list")] == 7 and ("a", "fake") not in lines
    assert lines[("arr", 0)] == 10 and lines[("arr", 0, "k")] == 11 and lines[("arr", 1, "k")] == 13
    assert lines[("arr", 1, "sub", "z")] == 15 and lines[("spaced", "inner", "v")] == 17


def test_key_lines_finds_every_key_of_the_bundled_recipes():
    for path in sorted(RECIPES.glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
        lines = key_lines(text, data)
        for table, value in data.items():
            keys = value.items() if isinstance(value, dict) else enumerate(value)
            for key, _ in keys:
                line = lines[(table, key)]
                written = text.splitlines()[line - 1]
                assert (str(key) in written) if isinstance(key, str) else written.startswith("[["), (path, table, key)


def test_the_flattened_recipe_reproduces_the_run_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "common/base.toml", BASE)
    exp = write(tmp_path, "exp.toml", 'include = ["common/base.toml"]\ncallbacks = []\n[optimizer]\nlr = 0.2\n')
    assert main(["validate", str(exp), "--print", "--set", "run.seed=4"]) == 0
    printed = capsys.readouterr().out
    first = pipeforge.run(exp, overrides=["run.seed=4"], run_dir=tmp_path / "first")
    flat = (first.run_dir / "recipe.toml").read_text()
    assert "include" not in flat and tomllib.loads(flat) == tomllib.loads(printed)
    again = pipeforge.run(first.run_dir / "recipe.toml", run_dir=tmp_path / "again")
    assert (again.run_dir / "metrics.jsonl").read_bytes() == (first.run_dir / "metrics.jsonl").read_bytes()
    assert len(first.history) == 2 and first.history[-1]["val_accuracy"] > 0
    # The run dir's flattened recipe is what --resume reads.
    longer = pipeforge.resume(first.run_dir, overrides=["trainer.epochs=3"])
    assert [row["epoch"] for row in longer.history] == [1, 2, 3]


@pytest.mark.slow
def test_pipeforge_validate_names_the_included_file_and_line(tmp_path):
    write(tmp_path, "base.toml", BASE.replace("lr = 0.1", "lrr = 0.1"))
    write(tmp_path, "exp.toml", 'include = ["base.toml"]\n')
    result = run_pipeforge("validate", "exp.toml", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = BASE.splitlines().index("lr = 0.1") + 1
    assert f"optimizer.lrr (base.toml, line {line}): unknown key" in result.stderr, result.stderr
    write(tmp_path, "loop.toml", 'include = ["loop.toml"]\n')
    result = run_pipeforge("validate", "loop.toml", cwd=tmp_path)
    assert result.returncode == 2 and "loop.toml: 1 problem" in result.stderr and "cycle" in result.stderr
