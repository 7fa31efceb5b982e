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
    assert out["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "dampening": 0.0,
                                "nesterov": False, "no_decay": [], "lr_groups": {}}
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


def test_every_bundled_recipe_validates(registry):
    root = Path(__file__).resolve().parents[1]
    files = sorted([*(root / "recipes").glob("*.toml"), *(root / "benchmarks" / "recipes").glob("*.toml")])
    assert len(files) >= 10
    for path in files:
        load_recipe(path, registry)


# ------------------------------------------------------------------ recipe bytes (issue 12, defect 6)

WITH_METRICS = GOOD + "\n[[metrics]]\nname = \"accuracy\"\n"


def error_for(registry, path: Path, overrides=()) -> RecipeError:
    """The RecipeError that loading `path` raises (any other exception fails the test)."""
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry, list(overrides))
    return info.value


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32"])
def test_a_recipe_not_in_utf8_names_the_file_and_the_encoding(tmp_path, registry, encoding):
    path = tmp_path / "recipe.toml"
    comment = "# café ünïcode" + ("" if encoding == "latin-1" else " “quoted”")
    path.write_bytes(GOOD.replace('name = "t"', f'name = "t"  {comment}').encode(encoding))
    message = str(error_for(registry, path))
    assert str(path) in message and "UTF-8" in message


def test_a_binary_file_is_a_recipe_error_naming_the_file(tmp_path, registry):
    path = tmp_path / "recipe.toml"
    path.write_bytes(bytes(range(256)) * 4)
    message = str(error_for(registry, path))
    assert str(path) in message and "UTF-8" in message


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, registry):
    path = tmp_path / "recipe.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode("utf-8"))
    assert load_recipe(path, registry).run.name == "t"


def test_a_toml_syntax_error_has_a_place_not_an_empty_one(tmp_path, registry):
    error = error_for(registry, write(tmp_path, GOOD + "\n[trainer\n"))
    (problem,) = error.problems
    assert problem.path == "line 16, column 9"
    assert ": : " not in str(error) and "- :" not in str(error)


@pytest.mark.parametrize("value", [
    "[" * 2000 + "]" * 2000,
    "[" * 500 + "]" * 500,
    "{a = " * 2000 + "1" + "}" * 2000,
])
def test_deep_nesting_in_a_file_is_a_recipe_error(tmp_path, registry, value):
    path = write(tmp_path, GOOD.replace("in_features = 16", f"in_features = 16\nhidden = {value}"))
    error = error_for(registry, path)
    assert str(path) in str(error) and "nest" in str(error)


def test_deep_dotted_keys_are_a_recipe_error_naming_the_key(tmp_path, registry):
    path = write(tmp_path, GOOD + "\n[trainer]\n" + ".".join(["k"] * 3000) + " = 1\n")
    (problem,) = error_for(registry, path).problems
    assert problem.path.startswith("trainer.k.k") and "nest" in problem.message


@pytest.mark.parametrize("override", [
    "model.hidden=" + "[" * 2000 + "]" * 2000,
    "model.hidden=" + "{a=" * 2000 + "1" + "}" * 2000,
    "model." + ".".join(["k"] * 5000) + "=1",
])
def test_deep_nesting_in_an_override_is_a_recipe_error_naming_it(tmp_path, registry, override):
    error = error_for(registry, write(tmp_path, GOOD), [override])
    assert "nest" in str(error)
    assert any(p.path.startswith(("--set model.", "model.")) for p in error.problems)


# ------------------------------------------------------------------ strict values (issue 12, defect 7)


@pytest.mark.parametrize("table, key, value", [
    ("trainer", "epochs", "true"),
    ("trainer", "epochs", '"5"'),
    ("trainer", "epochs", "2.0"),
    ("trainer", "batch_size", "false"),
    ("trainer", "shuffle", "1"),
    ("trainer", "shuffle", '"yes"'),
    ("run", "seed", '"1"'),
    ("optimizer", "lr", "true"),
    ("optimizer", "lr", '"0.1"'),
    ("optimizer", "nesterov", "0"),
    ("dataset", "classes", "true"),
    ("model", "hidden", '["64"]'),
    ("model", "in_features", "16.0"),
])
def test_a_bool_or_a_string_is_not_a_number(tmp_path, registry, table, key, value):
    (msg,) = problems(tmp_path, registry, GOOD, [f"{table}.{key}={value}"])
    assert msg.startswith(f"{table}.{key}"), msg


def test_an_integer_is_a_float(tmp_path, registry):
    recipe = load_recipe(write(tmp_path, GOOD.replace("lr = 0.1", "lr = 1")), registry, ["dataset.separation=3"])
    out = resolved(recipe)
    assert out["optimizer"]["lr"] == 1.0 and isinstance(out["optimizer"]["lr"], float)
    assert isinstance(out["dataset"]["separation"], float)


@pytest.mark.parametrize("override", [
    "optimizer.lr=inf", "optimizer.lr=nan", "optimizer.lr=+inf", "optimizer.momentum=inf",
    "optimizer.weight_decay=nan", "dataset.separation=inf", "loss.label_smoothing=nan",
    "trainer.dist_timeout_s=inf",
])
def test_non_finite_floats_are_refused(tmp_path, registry, override):
    (msg,) = problems(tmp_path, registry, GOOD + '\n[loss]\nname = "cross_entropy"\n', [override])
    assert msg.startswith(override.split("=")[0] + ":") and "finite" in msg


@pytest.mark.parametrize("override", [
    f"run.seed={2**64}", f"trainer.epochs={2**63}", f"dataset.n_train={2**70}",
    f"trainer.checkpoint_every_steps={2**63}", f"model.hidden=[{2**64}]",
])
def test_integers_beyond_int64_are_refused(tmp_path, registry, override):
    (msg,) = problems(tmp_path, registry, GOOD, [override])
    assert msg.startswith(override.split("=")[0]), msg


@pytest.mark.parametrize("text, overrides, place", [
    (GOOD.replace('"sgd"', '"adam"'), ["optimizer.betas=[1.5, 2.0]"], "optimizer.betas[0]"),
    (GOOD.replace('"sgd"', '"adam"'), ["optimizer.eps=0"], "optimizer.eps"),
    (GOOD, ["trainer.num_workers=-1"], "trainer.num_workers"),
    (GOOD, ["model.hidden=[-1]"], "model.hidden[0]"),
    (GOOD, ["model.hidden=[0, 8]"], "model.hidden[0]"),
    (GOOD, ["run.name=" + "a" * 5000], "run.name"),
    (GOOD, ["optimizer.momentum=1.5"], "optimizer.momentum"),
    (GOOD, ["optimizer.nesterov=true"], "optimizer"),
    (GOOD, ["trainer.best_metric=nope"], "trainer.best_metric"),
    (GOOD, ["trainer.eval_splits=['']"], "trainer.eval_splits[0]"),
    (GOOD, ["dataset.n_train=0"], "dataset.n_train"),
    (WITH_METRICS, ["metrics.0.top_k=5"], "metrics[0].top_k"),
])
def test_values_that_would_fail_at_run_time_are_refused(tmp_path, registry, text, overrides, place):
    found = problems(tmp_path, registry, text, overrides)
    assert any(msg.startswith(place + ":") for msg in found), found


TRANSFORMS = """
[run]
name = "t"

[dataset]
name = "catfish.image_folder"
root = "data"
transforms = [{{ name = "convert" }}, {transform}, {{ name = "to_tensor" }}]

[model]
name = "catfish.simplenet"

[optimizer]
name = "sgd"
"""


@pytest.mark.parametrize("transform, place", [
    ('{ name = "resize", size = [0, 0] }', "dataset.transforms[1].size[0]"),
    ('{ name = "resize", size = [64, -3] }', "dataset.transforms[1].size[1]"),
    ('{ name = "normalize", mean = [0.5], std = [0.0] }', "dataset.transforms[1].std[0]"),
    ('{ name = "normalize", mean = [0.5, 0.5], std = [0.2, 0.2, 0.2] }', "dataset.transforms[1]"),
    ('{ name = "random_resized_crop", size = [8], scale = [0.9, 0.1] }', "dataset.transforms[1].scale"),
    ('{ name = "random_horizontal_flip", p = true }', "dataset.transforms[1].p"),
])
def test_transform_params_are_checked_with_their_place(tmp_path, registry, transform, place):
    found = problems(tmp_path, registry, TRANSFORMS.format(transform=transform))
    assert any(msg.startswith(place + ":") for msg in found), found


@pytest.mark.parametrize("dataset, model, override, place", [
    ("popularity.products", "popularity.simplenet", "dataset.price_range=[0.0, inf]", "dataset.price_range[1]"),
    ("popularity.products", "popularity.simplenet", "dataset.threshold=nan", "dataset.threshold"),
    ("popularity.products", "popularity.simplenet", "model.hidden=true", "model.hidden"),
    ("simple.random", "simple.linear", "dataset.classes=true", "dataset.classes"),
    ("simple.random", "simple.linear", f"model.out_features={2**64}", "model.out_features"),
    ("fashion.fashion_mnist", "fashion.mlp", "model.hidden=-1", "model.hidden"),
    ("fashion.fashion_mnist", "fashion.mlp", "dataset.download=1", "dataset.download"),
    ("cifar.cifar10", "cifar.resnet18", "model.num_classes=1.5", "model.num_classes"),
    ("cifar.cifar10", "cifar.resnet18", "dataset.root=''", "dataset.root"),
    ("catfish.image_folder", "catfish.simplenet", "dataset.splits=['train', '../x']", "dataset.splits[1]"),
])
def test_plugin_params_are_strict_and_bounded(tmp_path, registry, dataset, model, override, place):
    text = f"[run]\nname = 't'\n[dataset]\nname = '{dataset}'\nroot = 'data'\n[model]\nname = '{model}'\n[optimizer]\nname = 'sgd'\n"
    if dataset.startswith(("popularity", "simple")):
        text = text.replace("root = 'data'\n", "")
    found = problems(tmp_path, registry, text, [override])
    assert any(msg.startswith(place + ":") for msg in found), found


def test_best_metric_accepts_what_the_run_will_produce(tmp_path, registry):
    for override in ("trainer.best_metric=val_accuracy", "trainer.best_metric=val_loss",
                     "trainer.best_metric=train_loss"):
        load_recipe(write(tmp_path, GOOD), registry, [override])
    load_recipe(write(tmp_path, WITH_METRICS), registry, ["metrics.0.top_k=2", "trainer.best_metric=val_top2_accuracy"])
    (msg,) = problems(tmp_path, registry, GOOD, ["trainer.eval_splits=['val']", "trainer.best_metric=test_loss"])
    assert msg.startswith("trainer.best_metric:") and "val_loss" in msg


def test_best_metric_names_the_keys_it_could_be(tmp_path, registry):
    (msg,) = problems(tmp_path, registry, GOOD, ["trainer.best_metric=val_acc"])
    assert msg.startswith("trainer.best_metric:") and "accuracy" in msg


def test_top_k_beyond_the_dataset_classes_is_refused_at_validate(tmp_path, registry):
    (msg,) = problems(tmp_path, registry, WITH_METRICS, ["dataset.classes=2", "metrics.0.top_k=3"])
    assert msg.startswith("metrics[0].top_k:") and "2 classes" in msg
    load_recipe(write(tmp_path, WITH_METRICS), registry, ["dataset.classes=3", "metrics.0.top_k=3"])


POPULARITY = """
[run]
name = "t"

[dataset]
name = "popularity.products"
n_train = 64
n_test = 32

[model]
name = "popularity.simplenet"

[optimizer]
name = "sgd"

[trainer]
epochs = 1
num_workers = 0

[[metrics]]
name = "accuracy"
"""


@pytest.mark.parametrize("override, place", [
    ("trainer.best_metric=val_loss", "trainer.best_metric"),  # the dataset's splits are train/test
    ("metrics.0.top_k=5", "metrics[0].top_k"),  # the dataset has 2 classes
])
def test_what_only_the_data_tells_is_checked_when_the_run_starts(tmp_path, override, place):
    import pipeforge

    recipe = tmp_path / "recipe.toml"
    recipe.write_text("callbacks = []\n" + POPULARITY)
    with pytest.raises(pipeforge.UsageError) as info:
        pipeforge.run(recipe, overrides=[override], run_dir=tmp_path / "run")
    assert place in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# ------------------------------------------------------------------ message size (issue 12, defect 12)


def test_a_huge_value_is_shown_truncated(tmp_path, registry):
    error = error_for(registry, write(tmp_path, GOOD), ["run.name=" + "x" * 1_000_000])
    assert len(str(error)) < 4096 and "run.name" in str(error) and "…" in str(error)


def test_a_huge_unknown_key_is_shown_truncated(tmp_path, registry):
    error = error_for(registry, write(tmp_path, GOOD + "\n[trainer]\n" + "k" * 1_000_000 + " = 1\n"))
    assert len(str(error)) < 4096 and "trainer.kkk" in str(error)


def test_many_problems_are_capped(tmp_path, registry):
    keys = "".join(f"k{i} = {i}\n" for i in range(20_000))
    error = error_for(registry, write(tmp_path, GOOD + "\n[trainer]\n" + keys))
    message = str(error)
    assert len(message) < 4096
    assert "trainer.k" in message and "… and 19,9" in message and "more problems" in message
    assert len(error.problems) == 20_000  # the caller still gets every one
