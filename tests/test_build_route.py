"""One route from a recipe table to a built component: validated once, built by the registry.

In-process (no subprocess): a recipe's params are validated exactly once per run; hook
implementations with a wrong name or argument are refused with the plugin's name and the
closest real hook; a plugin still implementing a removed `build_*` / `load_inputs` hook is told
what replaced it.
"""

from __future__ import annotations

import sys
import textwrap
from collections import Counter
from importlib import metadata

import pytest

import pipeforge
from pipeforge import Params, PluginError, hookimpl
from pipeforge.plugins import discover

RECIPE = {
    "run": {"name": "route", "seed": 3},
    "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 16, "features": 4},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "scheduler": {"name": "step_lr", "step_size": 1},
    "trainer": {"epochs": 2, "batch_size": 16},
    "callbacks": [{"name": "tensorboard"}],
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_each_components_params_are_validated_once_per_run(tmp_path, monkeypatch):
    calls: Counter[str] = Counter()
    original = Params.model_validate.__func__

    def counting(cls, obj, *args, **kwargs):
        calls[cls.__name__] += 1
        return original(cls, obj, *args, **kwargs)

    monkeypatch.setattr(Params, "model_validate", classmethod(counting))
    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run")
    assert len(result.history) == 2
    # dataset, model, loss, optimizer, scheduler, metric, callback: seven tables, seven classes.
    assert len(calls) == 7, calls
    assert set(calls.values()) == {1}, calls


class Typo:
    @hookimpl
    def on_epoch_ended(self, state, epoch):  # not a hook: must not be silently ignored
        raise AssertionError("never called")


class WrongArgument:
    @hookimpl
    def on_epoch_end(self, state, epochs):  # `epochs` is not an argument of on_epoch_end
        raise AssertionError("never called")


def test_a_hook_name_typo_is_an_error_naming_the_closest_hook(tmp_path):
    with pytest.raises(PluginError) as caught:
        pipeforge.run(RECIPE, run_dir=tmp_path / "run", callbacks=[Typo()])
    message = str(caught.value)
    assert "Typo object" in message and "'on_epoch_ended' is not a pipeforge hook" in message
    assert "did you mean 'on_epoch_end'?" in message


def test_a_wrong_hook_argument_names_the_hook_and_what_it_passes(tmp_path):
    with pytest.raises(PluginError) as caught:
        pipeforge.run(RECIPE, run_dir=tmp_path / "run", callbacks=[WrongArgument()])
    message = str(caught.value)
    assert "WrongArgument object" in message and "epochs" in message
    assert "'on_epoch_end' passes only: state, epoch, metrics" in message
    assert "Plugin '1" not in message  # pluggy's object id is not a name


def _plugin_module(tmp_path, monkeypatch, source: str) -> metadata.EntryPoint:
    module = "pipeforge_oldstyle_plugin"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(module, None)
    return metadata.EntryPoint(name="oldstyle", value=module, group="pipeforge")


def test_a_plugin_implementing_a_removed_build_hook_is_told_what_replaced_it(tmp_path, monkeypatch):
    entry = _plugin_module(tmp_path, monkeypatch, """
        from pipeforge import hookimpl

        @hookimpl
        def build_model(spec, context):
            return None
    """)
    (plugin,) = discover([entry]).registry.plugins
    assert plugin.status == "broken"
    assert "'build_model', which pipeforge no longer calls" in plugin.error
    assert "register a model component" in plugin.error


def test_a_plugin_hook_typo_is_reported_broken_with_the_closest_hook(tmp_path, monkeypatch):
    entry = _plugin_module(tmp_path, monkeypatch, """
        from pipeforge import hookimpl

        @hookimpl
        def register_componentz():
            return []
    """)
    (plugin,) = discover([entry]).registry.plugins
    assert plugin.status == "broken"
    assert "'register_componentz' is not a pipeforge hook; did you mean 'register_components'?" in plugin.error


def test_evaluating_the_training_split_never_overwrites_the_loss_trained_on(tmp_path):
    recipe = {**RECIPE, "trainer": {**RECIPE["trainer"], "eval_splits": ["train", "val"]}, "callbacks": []}
    row = pipeforge.run(recipe, run_dir=tmp_path / "run").history[-1]
    assert {"train_loss", "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy"} <= set(row)
    assert row["train_eval_loss"] != row["train_loss"]  # after the epoch's updates vs during them


def test_an_mlp_without_classes_names_the_recipe_key():
    from pipeforge import RecipeError
    from pipeforge.builtin import synthetic
    from pipeforge.context import BuildContext

    params = synthetic.p.MLPParams.model_validate({"in_features": 4})
    with pytest.raises(RecipeError, match="model.out_features"):
        synthetic.build_mlp(params, BuildContext(registry=None, seed=0, device="cpu"))
