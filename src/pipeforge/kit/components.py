"""Building and trying each of a plugin's components for `check-plugin` (see `check` for what
is checked and which params are used). Imports torch: `check` imports it only when it runs.

Components are taken in the order a run builds them (datasets, models, losses, optimizers,
schedulers, metrics, callbacks, transforms), so that a model has a dataset to train on, and a
metric or loss a model's outputs to be tried on. One component's failure never stops the
others from being checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from pipeforge.context import BuildContext, Datasets
from pipeforge.errors import DataError, PipeforgeError
from pipeforge.kit import probe
from pipeforge.kit.report import CheckReport, Finding
from pipeforge.recipe import Recipe
from pipeforge.registry import Bound, Component, Registry

Batch = tuple[torch.Tensor, torch.Tensor]
# The order a run builds components in: each may use what was built before it.
ORDER = ("dataset", "model", "loss", "optimizer", "scheduler", "metric", "callback", "transform")


class Data:
    """A built dataset, its first training batch and how messages name it."""

    def __init__(self, datasets: Datasets, batch: Batch, label: str) -> None:
        self.datasets, self.batch, self.label = datasets, batch, label


class Sample:
    """A model's outputs on the first batch of its data, and that batch's targets."""

    def __init__(self, outputs: torch.Tensor, targets: torch.Tensor, data: Data) -> None:
        self.outputs, self.targets, self.data = outputs, targets, data


class ComponentCheck:
    """Checks `components` (all from one plugin) into `report`; `scratch` is an empty folder
    for the context's run dir."""

    def __init__(self, registry: Registry, components: list[Component], recipes: list[Recipe],
                 report: CheckReport, scratch: Path) -> None:
        self.registry, self.components, self.recipes, self.report = registry, components, recipes, report
        self.run_dir = scratch / "run"
        self.run_dir.mkdir()
        self.data: dict[tuple[str, str], Data] = {}  # (dataset name, params JSON) → built data
        # A model's outputs and targets on its data: the first model's, and per recipe (by id).
        self.sample: Sample | None = None
        self.recipe_samples: dict[int, Sample] = {}
        self.model: torch.nn.Module | None = None

    def run(self) -> None:
        loadable = [c for c in self.components if self._loads(c)]
        for kind in ORDER:
            for component in (c for c in loadable if c.kind == kind):
                if component.unchecked:  # declared by the plugin, shown in the report
                    self._note(component, f"not built: {component.unchecked}")
                    continue
                try:
                    getattr(self, f"_{kind}")(component)
                except Exception as exc:  # the check itself must get through every component
                    self._problem(component, probe.failure(exc, _label(component), "checking it"))

    # ---------------------------------------------------------------- findings

    def _problem(self, component: Component, message: str) -> None:
        self.report.problems.append(Finding(component.kind, component.name, message))

    def _note(self, component: Component, message: str) -> None:
        self.report.notes.append(Finding(component.kind, component.name, message))

    def _passed(self, component: Component, message: str) -> None:
        self.report.passed.append(Finding(component.kind, component.name, message))

    # ---------------------------------------------------------------- shared steps

    def _loads(self, component: Component) -> bool:
        """Import its builder and input reader; a reference pointing nowhere is a problem.
        Returns whether the builder loaded."""
        label = _label(component)
        loaded = {}
        for role, resolve in (("builder", component.builder), ("input reader", component.reader)):
            try:
                loaded[role] = resolve()
            except PipeforgeError as exc:  # the registry's message says which reference failed
                self._problem(component, probe.without_label(str(exc), label))
            except Exception as exc:  # e.g. the module raises SyntaxError or NameError on import
                self._problem(component, probe.failure(exc, label, f"importing its {role}"))
        for role, value in loaded.items():
            if value is not None and not callable(value):
                self._problem(component, f"its {role} is a {type(value).__name__}, not a function")
                loaded[role] = None
        return loaded.get("builder") is not None

    def _params(self, component: Component) -> tuple[BaseModel, Recipe | None] | None:
        """The params of the first shipped recipe naming `component`, else its defaults; None
        (with a note, or a problem when the defaults themselves are invalid) when neither."""
        for recipe in self.recipes:
            for _, kind, spec in recipe.component_specs():
                if kind == component.kind and spec.name == component.name and spec.bound is not None:
                    return spec.bound.params, recipe
        try:
            return component.params.model_validate({}), None
        except ValidationError as exc:
            missing = sorted({str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]})
            if not missing:
                self._problem(component, f"its default params do not validate: {exc.errors()[0]['msg']}")
                return None
            self._note(component, f"not built: it has required params ({', '.join(missing)}) and no recipe "
                                  "shipped with the plugin names it; ship one under recipes/ to have it checked")
            return None

    def _context(self, recipe: Recipe | None, **built: Any) -> BuildContext:
        torch.manual_seed(recipe.run.seed if recipe else 0)
        return BuildContext(self.registry, recipe.run.seed if recipe else 0, "cpu", self.run_dir, recipe, **built)

    def _build(self, component: Component, params: BaseModel, context: BuildContext) -> Any:
        """The built component, or None after recording why it is unusable. Components built
        after the dataset in a run get a dataset of the check in `context` when it has none;
        when there is none at all, a builder that fails is noted, not blamed."""
        label = _label(component)
        if context.datasets is None and component.kind not in ("dataset", "transform"):
            context.datasets = self.sample.data.datasets if self.sample else next(
                (data.datasets for data in self.data.values()), None)
        try:
            value = Bound(component, params).build(context)
        except Exception as exc:
            failed = probe.failure(exc, label, "building it")
            if context.datasets is None and component.kind not in ("dataset", "transform"):
                self._note(component, f"not checked: {failed}, with no dataset built (a run always has one)")
            else:
                self._problem(component, failed)
            return None
        problems = probe.built_problems(component.kind, value, label)
        for problem in problems:
            self._problem(component, problem)
        return None if problems else value

    def _data_for(self, recipe: Recipe | None) -> Data | str:
        """The data a model of `recipe` trains on (its dataset), else the plugin's first
        dataset; a reason (str) when there is none."""
        if recipe is None:
            return next(iter(self.data.values()), "none of the plugin's datasets could be built here")
        spec = recipe.dataset
        key = (spec.name, spec.bound.params.model_dump_json())
        if key not in self.data:
            label = f"dataset '{spec.name}'"
            try:
                datasets = spec.bound.build(self._context(recipe))
            except Exception as exc:
                return f"its recipe's {label} could not be built ({probe.failure(exc, label, 'building it')})"
            if not isinstance(datasets, Datasets):
                return f"its recipe's {label} returned {type(datasets).__name__}, not pipeforge.Datasets"
            problems, batch = probe.first_batch(datasets, label)
            if batch is None:
                return f"its recipe's {label} has no usable first batch ({'; '.join(problems)})"
            self.data[key] = Data(datasets, batch, label)
        return self.data[key]

    def _loss_for(self, recipe: Recipe | None, datasets: Datasets) -> Any:
        """The recipe's loss, else cross-entropy for classes and mean squared error otherwise."""
        if recipe is not None:
            try:
                return recipe.loss.bound.build(self._context(recipe, datasets=datasets))
            except Exception:  # that loss is checked on its own; the step uses a standard one
                pass
        functional = torch.nn.functional
        return functional.cross_entropy if datasets.classes is not None else functional.mse_loss

    # ---------------------------------------------------------------- one method per kind

    def _dataset(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        try:
            datasets = Bound(component, params).build(self._context(recipe))
        except DataError as exc:  # data this machine lacks: a fact about the machine, not the plugin
            reason = probe.without_label(str(exc), _label(component))
            self._note(component, f"not built: its data is not available here: {reason}")
            return
        except Exception as exc:
            self._problem(component, probe.failure(exc, _label(component), "building it"))
            return
        wrong_type = probe.built_problems("dataset", datasets, _label(component))
        for problem in wrong_type:
            self._problem(component, problem)
        if wrong_type:
            return
        problems, batch = probe.first_batch(datasets, _label(component))
        for problem in problems:
            self._problem(component, problem)
        if batch is None:
            return
        self.data.setdefault((component.name, params.model_dump_json()), Data(datasets, batch, _label(component)))
        sizes = ", ".join(f"{split} {len(data)}" for split, data in datasets.splits.items())
        classes = f"{datasets.num_classes} classes" if datasets.classes is not None else "no classes"
        self._passed(component, f"built: {sizes}; {classes}; a first batch of inputs {tuple(batch[0].shape)}")

    def _model(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        data = self._data_for(recipe)
        if isinstance(data, str):
            self._note(component, f"not built: no data to train it on: {data}")
            return
        model = self._build(component, params, self._context(recipe, datasets=data.datasets))
        if model is None:
            return
        loss_fn = self._loss_for(recipe, data.datasets)
        problems, outputs = probe.step_problems(model, data.batch, data.datasets, loss_fn, _label(component), data.label)
        for problem in problems:
            self._problem(component, problem)
        if outputs is None:
            return
        sample = Sample(outputs, data.batch[1], data)
        if self.sample is None:
            self.sample, self.model = sample, model
        if recipe is not None:
            self.recipe_samples.setdefault(id(recipe), sample)
        self._passed(component, f"one training step on the first {len(outputs)} samples of {data.label}: "
                                f"outputs {tuple(outputs.shape)}")

    def _loss(self, component: Component) -> None:
        self._built_and_tried(component, lambda loss, outputs, targets: probe.loss_run_problems(
            loss, outputs, targets, _label(component)))

    def _metric(self, component: Component) -> None:
        self._built_and_tried(component, lambda metric, outputs, targets: probe.metric_run_problems(
            metric, outputs, targets, _label(component)))

    def _built_and_tried(self, component: Component, attempt: Any) -> None:
        """Build a loss or metric and try it on a model's outputs: those of the model of the
        recipe that names it, where a failure is a problem; else those of the plugin's first
        model, where a failure is only noted (it may be meant for other outputs)."""
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        paired = self.recipe_samples.get(id(recipe)) if recipe is not None else None
        sample = paired or self.sample
        data = sample.data if sample else self._data_for(recipe)
        datasets = data.datasets if isinstance(data, Data) else None
        model = self.model if sample is self.sample else None
        value = self._build(component, params, self._context(recipe, datasets=datasets, model=model))
        if value is None:
            return
        if sample is None:
            self._passed(component, "built; not tried on outputs: the plugin has no model that trains on its data")
            return
        problems = attempt(value, sample.outputs, sample.targets)
        where = f"a model's outputs on {sample.data.label}"
        if problems and paired is None:
            self._note(component, f"could not be tried on {where} (perhaps it is meant for other outputs): "
                                  + "; ".join(problems))
        for problem in problems if paired is not None else []:
            self._problem(component, problem)
        if not problems:
            self._passed(component, f"built and tried on {where}")

    def _optimizer(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        model = self.model or torch.nn.Linear(4, 3)
        optimizer = self._build(component, params, self._context(recipe, model=model))
        if optimizer is None:
            return
        problems = probe.optimizer_step_problems(optimizer, model, _label(component))
        for problem in problems:
            self._problem(component, problem)
        if not problems:
            self._passed(component, f"built over a {type(model).__name__}'s parameters; took a step")

    def _scheduler(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        # As for a run of 10 epochs (or optimizer steps) with no warm-up.
        context = self._context(recipe, model=model, optimizer=optimizer, total_steps=10, schedule_length=10)
        scheduler = self._build(component, params, context)
        if scheduler is None:
            return
        try:
            optimizer.step()
            # One with a `monitor` is stepped with that metric's value, as the engine does.
            scheduler.step(1.0) if getattr(scheduler, "monitor", None) is not None else scheduler.step()
        except Exception as exc:
            self._problem(component, probe.failure(exc, _label(component), "a step"))
            return
        self._passed(component, "built over an SGD optimizer; stepped once")

    def _callback(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        if self._build(component, params, self._context(recipe, model=self.model)) is not None:
            self._passed(component, "built; hook names and arguments match pipeforge's hooks; "
                                    "state_dict() survives a checkpoint")

    def _transform(self, component: Component) -> None:
        found = self._params(component)
        if found is None:
            return
        params, recipe = found
        if self._build(component, params, self._context(recipe)) is not None:
            self._passed(component, "built (a callable)")


def _label(component: Component) -> str:
    """How pipeforge's own messages name a component (`model 'acme.net'`)."""
    return f"{component.kind} '{component.name}'"
