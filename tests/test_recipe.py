"""Recipe validation: every problem reported at once, with place, expectation and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeforge.errors import RecipeError
from pipeforge.plugins import discover
from pipeforge.recipe import apply_overrides, load_recipe, resolved, validate_recipe

GOOD = """
[run]
name = "t"

[dataset]
name = "synthetic_classification"

[model]
name = "mlp"
in_features = 16

[optimizer]
name = "sgd"
lr = 0.1
"""


@pytest.fixture(scope="module")
def registry():
    return discover().registry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, registry, text: str, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text), registry, list(overrides))
    return [p.render() for p in info.value.problems]


def test_good_recipe_fills_defaults(tmp_path, registry):
    recipe = load_recipe(write(tmp_path, GOOD), registry)
    assert recipe.loss.name == "cross_entropy"
    assert [m.name for m in recipe.metrics] == ["accuracy"]
    out = resolved(recipe)
    assert out["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "dampening": 0.0, "nesterov": False}
    assert out["trainer"]["device"] == "auto"


def test_misspelled_param_names_path_and_suggests(tmp_path, registry):
    text = GOOD.replace("lr = 0.1", "lrr = 0.1")
    assert problems(tmp_path, registry, text) == [
        "optimizer.lrr: unknown key (found 0.1 (float)); did you mean 'lr'?"
    ]


def test_unknown_component_suggests_closest(tmp_path, registry):
    (msg,) = problems(tmp_path, registry, GOOD.replace('name = "sgd"', 'name = "sgdd"'))
    assert msg.startswith("optimizer.name: no optimizer named 'sgdd' is registered")
    assert "did you mean 'sgd'?" in msg


def test_wrong_type_names_path_and_expected_type(tmp_path, registry):
    (msg,) = problems(tmp_path, registry, GOOD.replace("lr = 0.1", 'lr = "fast"'))
    assert msg.startswith("optimizer.lr: expected a valid number")
    assert "found 'fast' (string)" in msg


def test_all_errors_reported_together(tmp_path, registry):
    text = (
        GOOD.replace("lr = 0.1", "lrr = 0.1")
        .replace('name = "mlp"', 'name = "mlpp"')
        + "\n[trainer]\nepochs = 0\nbatchsize = 4\n"
    )
    found = problems(tmp_path, registry, text)
    assert len(found) == 4, found
    joined = "\n".join(found)
    for needle in ("optimizer.lrr", "model.name", "trainer.epochs: expected a value greater than or equal to 1", "trainer.batchsize"):
        assert needle in joined
    assert "did you mean 'batch_size'?" in joined


def test_unknown_table_suggests(tmp_path, registry):
    (msg,) = problems(tmp_path, registry, GOOD + "\n[optimiser]\nname = 'sgd'\n")
    assert msg.startswith("optimiser: unknown key") and "did you mean 'optimizer'?" in msg


def test_missing_tables_and_keys(tmp_path, registry):
    found = problems(tmp_path, registry, "[run]\nseed = 1\n")
    assert {"run.name: required key is missing", "dataset: required key is missing",
            "model: required key is missing", "optimizer: required key is missing"} == set(found)


def test_nested_list_paths(tmp_path, registry):
    text = GOOD + "\n[[callbacks]]\nname = 'tensorboard'\nlog_every = 3\n"
    (msg,) = problems(tmp_path, registry, text)
    assert msg.startswith("callbacks[0].log_every: unknown key") and "log_every_n_steps" in msg


def test_toml_syntax_error_names_the_file(tmp_path, registry):
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, "[run\nname='x'"), registry)
    assert str(tmp_path / "recipe.toml") in str(info.value)
    assert "not valid TOML" in str(info.value) and "line 1" in str(info.value)


def test_overrides_are_toml_values_and_validated(tmp_path, registry):
    recipe = load_recipe(write(tmp_path, GOOD), registry, ["optimizer.lr=0.5", "trainer.epochs=3", "run.name=other"])
    assert recipe.trainer.epochs == 3 and recipe.run.name == "other"
    assert resolved(recipe)["optimizer"]["lr"] == 0.5
    (msg,) = problems(tmp_path, registry, GOOD, ["optimizer.lr=abc"])
    assert msg.startswith("optimizer.lr: expected a valid number") and "'abc'" in msg


def test_override_indexes_arrays_and_rejects_non_tables():
    data = {"metrics": [{"name": "accuracy"}], "run": {"name": "x"}}
    apply_overrides(data, ["metrics.0.top_k=2"])
    assert data["metrics"][0]["top_k"] == 2
    with pytest.raises(RecipeError, match="'run.name' is not a table"):
        apply_overrides(data, ["run.name.x=1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides(data, ["novalue"])


def test_validate_recipe_without_file(registry):
    with pytest.raises(RecipeError) as info:
        validate_recipe({"run": {"name": "bad name!"}}, registry)
    assert any(p.path == "run.name" and "pattern" in p.message for p in info.value.problems)
