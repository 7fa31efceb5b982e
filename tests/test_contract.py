"""The metric and callback contract: base classes, checks at build time, stop requests, and
callback state that rides in checkpoints (in-process through `pipeforge.run`, plus end-to-end
early stopping through the installed command, killed and resumed)."""

from __future__ import annotations

import json
import signal

import pytest
import torch

import pipeforge
from conftest import run_in_process, run_pipeforge
from pipeforge import Callback, Component, Metric, NoParams, PluginError, RecipeError
from pipeforge.builtin.metrics import Accuracy
from pipeforge.checkpoint import latest_valid
from pipeforge.plugins import discover
from pipeforge.registry import PluginInfo

RECIPE = {
    "run": {"name": "contract", "seed": 5},
    "dataset": {"name": "synthetic_classification", "n_train": 96, "n_val": 32, "features": 4},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"epochs": 5, "batch_size": 16},
    "callbacks": [],
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.calls: list[str] = []

    def on_fit_start(self, state):
        self.calls.append("fit_start")

    def on_epoch_end(self, state, epoch, metrics):
        self.calls.append(f"epoch_end {epoch}")
        if epoch == self.epoch:
            state.request_stop("enough")

    def on_fit_end(self, state):
        self.calls.append("fit_end")


def test_a_callback_stops_a_run_as_a_finished_run(tmp_path):
    callback = StopAfterEpoch(2)  # no @hookimpl: overriding a Callback method is enough
    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run", callbacks=[callback])
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert callback.calls == ["fit_start", "epoch_end 1", "epoch_end 2", "fit_end"]
    assert result.stop_reason == "enough" and (tmp_path / "run" / "model.pt").is_file()
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["stopped"] == {"reason": "enough", "epoch": 2, "step": 12}
    _, saved = latest_valid(tmp_path / "run" / "checkpoints")
    assert saved.epochs_done == 2  # the stopping epoch is checkpointed whatever the cadence


def test_a_stop_requested_mid_epoch_ends_that_epoch_after_the_step(tmp_path):
    class StopAtStep(Callback):
        def on_batch_end(self, state, batch_index):
            if state.global_step == 8:
                state.request_stop("step 8")

    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run", callbacks=[StopAtStep()])
    assert [row["epoch"] for row in result.history] == [1, 2]  # epoch 2 trained 2 of its 6 steps
    assert result.state.global_step == 8 and "val_accuracy" in result.history[-1]


def test_a_misspelled_callback_method_is_refused():
    class Misspelled(Callback):
        def on_epoch_ended(self, state, epoch, metrics):
            raise AssertionError("never called")

    with pytest.raises(PluginError, match="did you mean 'on_epoch_end'"):
        pipeforge.run(RECIPE, callbacks=[Misspelled()])


def with_component(component: Component) -> pipeforge.plugins.Plugins:
    plugins = discover()
    plugins.registry.add(component, PluginInfo("acme", "pipeforge-acme", "1.2", "acme"))
    return plugins


class Nameless:
    def reset(self): ...
    def update(self, outputs, targets): ...
    def compute(self): return 0.0


def test_a_metric_that_breaks_the_contract_is_refused_naming_it_and_its_distribution(tmp_path):
    plugins = with_component(Component("metric", "acme.nameless", NoParams, lambda params, context: Nameless()))
    recipe = {**RECIPE, "metrics": [{"name": "accuracy"}, {"name": "acme.nameless"}]}
    with pytest.raises(PluginError) as caught:
        pipeforge.run(recipe, run_dir=tmp_path / "run", plugins=plugins)
    message = str(caught.value)
    assert "metric 'acme.nameless' (metrics[1], from pipeforge-acme 1.2)" in message
    assert "its `name` must be a key" in message


def test_a_metric_named_loss_and_two_metrics_with_one_key_are_refused(tmp_path):
    class Loss(Nameless):
        name = "loss"

    plugins = with_component(Component("metric", "acme.loss", NoParams, lambda params, context: Loss()))
    with pytest.raises(PluginError, match="would overwrite the engine's <split>_loss"):
        pipeforge.run({**RECIPE, "metrics": [{"name": "acme.loss"}]}, run_dir=tmp_path / "a", plugins=plugins)
    # A key validate cannot foresee (the metric's params do not name it) is refused at build.
    plugins.registry.add(Component("metric", "acme.acc", NoParams, lambda params, context: Accuracy()),
                         PluginInfo("acme", "pipeforge-acme", "1.2", "acme"))
    twice = {**RECIPE, "metrics": [{"name": "accuracy"}, {"name": "acme.acc"}]}
    with pytest.raises(PluginError, match=r"metrics\[0\].*and metric 'acme.acc' \(metrics\[1\]"):
        pipeforge.run(twice, run_dir=tmp_path / "b", plugins=plugins)


def test_the_default_all_reduce_sums_the_listed_states():
    metric = Accuracy()
    assert isinstance(metric, Metric)  # the built-in is an ordinary pipeforge.Metric
    metric.update(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1, 1]))
    metric.all_reduce(lambda tensor: tensor * 3)  # three ranks with the same shard
    assert (metric.correct, metric.total) == (6, 9) and metric.compute() == pytest.approx(2 / 3)
    empty = Accuracy()  # a rank whose shard had no batch still takes part, with zeros
    empty.all_reduce(lambda tensor: tensor + torch.tensor([4.0, 6.0], dtype=torch.float64))
    assert (empty.correct, empty.total) == (4, 6)


def test_callback_state_that_a_checkpoint_cannot_hold_is_refused(tmp_path):
    class Opaque(Callback):
        def state_dict(self):
            return {"when": object()}

    plugins = with_component(Component("callback", "acme.opaque", NoParams, lambda params, context: Opaque()))
    with pytest.raises(PluginError, match=r"callback 'acme.opaque' \(callbacks\[0\].*\['when'\] holds a object"):
        pipeforge.run({**RECIPE, "callbacks": [{"name": "acme.opaque"}]}, run_dir=tmp_path / "run", plugins=plugins)


# ------------------------------------------------------------------------------ early stopping

EARLY = {**RECIPE, "trainer": {"epochs": 30, "batch_size": 16},
         "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
         "callbacks": [{"name": "early_stopping", "monitor": "val_accuracy", "patience": 2, "min_delta": 0.0}]}


def test_early_stopping_stops_when_the_metric_stops_improving(tmp_path):
    result = pipeforge.run(EARLY, run_dir=tmp_path / "run")
    values = [row["val_accuracy"] for row in result.history]
    assert len(values) < 30 and result.stop_reason.startswith("early stopping: val_accuracy")
    best = max(values[:-2])
    assert all(value <= best for value in values[-2:])  # the last two epochs did not improve on it
    assert result.state.epoch == len(values)


def test_early_stopping_refuses_a_monitor_the_run_does_not_write(tmp_path):
    """Refused by validation, before anything is built (the monitor is marked METRIC_KEY)."""
    recipe = {**EARLY, "callbacks": [{"name": "early_stopping", "monitor": "val_f1"}]}
    with pytest.raises(RecipeError, match=r"callbacks\[0\]\.monitor.*expected a key the run writes"):
        pipeforge.run(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_early_stopping_counters_survive_kill_and_resume(tmp_path, killer_env):
    """Killed after an epoch that did not improve, the resumed run counts on from the
    checkpoint and stops at the same epoch with bitwise the same weights and metrics."""
    recipe = tmp_path / "early.toml"
    recipe.write_text(
        '[run]\nname = "early"\nseed = 5\n'
        '[dataset]\nname = "synthetic_classification"\nn_train = 96\nn_val = 32\nfeatures = 4\n'
        '[model]\nname = "mlp"\nin_features = 4\nhidden = [8]\n'
        '[optimizer]\nname = "sgd"\nlr = 0.5\nmomentum = 0.9\n'
        '[trainer]\nepochs = 30\nbatch_size = 16\n'
        '[[callbacks]]\nname = "early_stopping"\nmonitor = "val_accuracy"\npatience = 2\n'
    )
    reference = tmp_path / "reference"  # trained in this process; the killed run is a process
    done = run_in_process("run", recipe, "--run-dir", reference, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    # The first epoch after which the patience counter is 1: kill right after it.
    best, counting = None, []
    for row in rows:
        if best is None or row["val_accuracy"] > best:
            best, counter = row["val_accuracy"], 0
        else:
            counter += 1
        counting.append(counter)
    kill_after = next(row["epoch"] for row, count in zip(rows, counting) if count == 1)
    assert kill_after < len(rows), "the reference must stop early after the kill point"

    run_dir = tmp_path / "run"
    killed = run_pipeforge("run", recipe, "--run-dir", run_dir, "--quiet", cwd=tmp_path,
                           env={**killer_env, "KILL_AFTER_EPOCH": str(kill_after)})
    assert killed.returncode == -signal.SIGKILL and not (run_dir / "model.pt").exists()
    resumed = run_in_process("run", "--resume", run_dir, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    mine = torch.load(run_dir / "model.pt", weights_only=True)
    theirs = torch.load(reference / "model.pt", weights_only=True)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert json.loads((run_dir / "env.json").read_text())["stopped"]["epoch"] == len(rows)


def readme_plugin_code() -> str:
    """The README's metric-and-callback example, as written there."""
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### A metric and a callback"):]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_the_readmes_metric_and_callback_work_as_written(tmp_path):
    from pydantic import Field

    from pipeforge import Params

    namespace: dict = {}
    exec(compile(readme_plugin_code(), "README.md", "exec"), namespace)

    class TargetParams(Params):
        target: float = Field(0.8)

    plugins = with_component(Component("metric", "acme.balanced_accuracy", NoParams, namespace["build_balanced_accuracy"]))
    plugins.registry.add(Component("callback", "acme.stop_at_accuracy", TargetParams, namespace["build_stop_at_accuracy"]),
                         PluginInfo("acme", "pipeforge-acme", "1.2", "acme"))
    recipe = {**RECIPE, "metrics": [{"name": "accuracy"}, {"name": "acme.balanced_accuracy"}],
              "callbacks": [{"name": "acme.stop_at_accuracy", "target": 0.7}]}
    result = pipeforge.run(recipe, run_dir=tmp_path / "run", plugins=plugins)
    last = result.history[-1]
    assert 0.7 <= last["val_accuracy"] and 0.5 < last["val_balanced_accuracy"] <= 1.0
    assert all(row["val_accuracy"] < 0.7 for row in result.history[:-1])
    assert result.stop_reason == "val_accuracy reached 0.7" and len(result.history) < 5
    _, saved = latest_valid(tmp_path / "run" / "checkpoints")
    assert saved.callbacks == {"0.acme.stop_at_accuracy": {"hits": 1}}
    # Across processes: two ranks' sums are the sums of their states.
    metric = namespace["BalancedAccuracy"](2)
    metric.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    metric.all_reduce(lambda tensor: tensor * 2)
    assert metric.hits.tolist() == [2.0, 0.0] and metric.counts.tolist() == [2.0, 2.0]


def test_metric_key_collisions_are_refused_at_validate_with_their_place(tmp_path):
    from pipeforge.recipe import validate_recipe
    from pipeforge import RecipeError

    twice = {**RECIPE, "metrics": [{"name": "accuracy"}, {"name": "accuracy", "top_k": 1}]}
    with pytest.raises(RecipeError, match=r"metrics\[1\]: records the same key as metrics\[0\] \('<split>_accuracy'\)"):
        validate_recipe(twice, discover().registry)
    different = {**RECIPE, "metrics": [{"name": "accuracy"}, {"name": "accuracy", "top_k": 2}]}
    assert len(validate_recipe(different, discover().registry).metrics) == 2


def test_a_finished_run_needs_only_the_plugins_of_the_parts_it_uses(tmp_path):
    """A run trained with a third-party callback and metric: after that plugin is gone,
    predict still works; evaluate (which computes the metrics) names what to install."""
    from pipeforge.inference import evaluate_run, predict as predict_run

    info = PluginInfo("acme", "pipeforge-acme", "1.2", "acme")
    plugins = discover()
    plugins.registry.plugins.append(info)
    plugins.registry.add(Component("callback", "acme.watch", NoParams, lambda params, context: Callback()), info)
    plugins.registry.add(Component("metric", "acme.accuracy", NoParams, lambda params, context: Accuracy()), info)
    recipe = {**RECIPE, "trainer": {"epochs": 1}, "metrics": [{"name": "acme.accuracy"}],
              "callbacks": [{"name": "acme.watch"}]}
    run_dir = pipeforge.run(recipe, run_dir=tmp_path / "run", plugins=plugins).run_dir

    without = discover()  # pipeforge-acme uninstalled
    with pytest.raises(pipeforge.UsageError, match="does not support predict"):
        predict_run(run_dir, without, ["[[1, 2, 3, 4]]"])  # got past the recipe: no input reader here
    with pytest.raises(pipeforge.RecipeError) as caught:
        evaluate_run(run_dir, without)
    message = str(caught.value)
    assert "metrics[0].name" in message and "callbacks" not in message
    assert "the run was trained with it from pipeforge-acme 1.2 (env.json): pip install 'pipeforge-acme==1.2'" in message


def test_validate_refuses_a_builder_that_points_nowhere():
    from pipeforge import RecipeError
    from pipeforge.recipe import validate_recipe

    plugins = with_component(Component("model", "acme.ghost", NoParams, "pipeforge_acme_gone.build:build_ghost"))
    with pytest.raises(RecipeError) as caught:
        validate_recipe({**RECIPE, "model": {"name": "acme.ghost"}}, plugins.registry)
    message = str(caught.value)
    assert "model.name: model 'acme.ghost' (from pipeforge-acme 1.2) cannot load its builder" in message
    assert "No module named 'pipeforge_acme_gone'" in message
