"""Using a finished run: evaluate its model and predict on new inputs (export: `export.py`).

Everything is rebuilt from the run dir's `recipe.toml` with the engine's own builders and
`Evaluator`, then the chosen weights are loaded: the run's `model.pt` by default, `last` (the newest valid
step checkpoint), `best` (`checkpoints/best.pt`) or a file path. Every file is read with
`torch.load(weights_only=True)`, so a file carrying pickled code is refused and runs nothing.
Nothing here prints: the CLI (`cli_inference`) shows the results.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeforge import checkpoint
from pipeforge.context import BuildContext, Datasets
from pipeforge.distributed import Dist
from pipeforge.build import build_datasets, build_metrics, build_model, place_model
from pipeforge.evaluation import Evaluator
from pipeforge.errors import CheckpointError, DataError, PluginError, Problem, RecipeError, UsageError
from pipeforge.plugins import Plugins
from pipeforge.recipe import Recipe, load_recipe, read_toml
from pipeforge.setup import resolve_device, seed_everything

log = logging.getLogger("pipeforge")


@dataclass
class Weights:
    """The weights a command uses, where they came from, and the run facts stored beside them.

    `classes` and `example_input` come from the checkpoint itself, or, for a plain state_dict
    such as `model.pt`, from the run's newest valid checkpoint (None when it has none).
    """

    path: Path
    state_dict: dict[str, Any]
    classes: list[str] | None = None
    example_input: torch.Tensor | None = None


@dataclass
class LoadedRun:
    """A run rebuilt from its run dir: recipe, build context and the model with its weights."""

    path: Path
    recipe: Recipe
    context: BuildContext
    weights: Weights
    model: torch.nn.Module
    device: torch.device


@dataclass
class Evaluation:
    """`metrics` keyed `<split>_loss`, `<split>_<metric>` as in metrics.jsonl."""

    run_dir: Path
    weights: Path
    splits: list[str]
    metrics: dict[str, float]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Prediction:
    """One sample's prediction: the class name, its index, and every class's probability."""

    name: str
    index: int
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"class": self.name, "index": self.index, "probabilities": self.probabilities}


# ------------------------------------------------------------------------------ loading


# The component tables each command builds: the others (callbacks, optimizer, scheduler) need
# not be installed to use a finished run.
PREDICT_TABLES = ("dataset", "model")
EVALUATE_TABLES = ("dataset", "model", "loss", "metrics")


def read_recipe(run_dir: Path, plugins: Plugins, tables: tuple[str, ...] = EVALUATE_TABLES) -> Recipe:
    """The run's resolved `recipe.toml`, its `tables` validated against the installed plugins.

    A component that is no longer installed is named with the distribution and version the run
    was trained with (from env.json)."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run dir")
    path = run_dir / "recipe.toml"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a pipeforge run dir (no recipe.toml)")
    try:
        return load_recipe(path, plugins.registry, tables=tables)
    except RecipeError as exc:
        raise RecipeError([_install_hint(problem, run_dir) for problem in exc.problems], exc.source) from None


def _install_hint(problem: Problem, run_dir: Path) -> Problem:
    """Add, to a problem about an unregistered component, the distribution that provided it
    when the run was trained."""
    if not problem.path.endswith(".name") or "registered" not in problem.message:
        return problem
    try:
        data = read_toml(run_dir / "recipe.toml")
        env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
        table, _, rest = problem.path.removesuffix(".name").partition("[")
        spec = data[table][int(rest.rstrip("]"))] if rest else data[table]
        namespace = spec["name"].split(".", 1)[0] if "." in spec["name"] else "builtin"
        plugin = next(p for p in env.get("plugins", []) if p.get("name") == namespace)
    except (OSError, ValueError, KeyError, TypeError, IndexError, StopIteration, RecipeError):
        return problem
    hint = (f"the run was trained with it from {plugin['distribution']} {plugin['version']} (env.json): "
            f"pip install '{plugin['distribution']}=={plugin['version']}'")
    return Problem(problem.path, problem.message, hint)


def choose_weights(run_dir: Path, choice: str | None) -> Weights:
    """Load the weights `--checkpoint` names: None → model.pt, "last", "best", "ema"
    (model_ema.pt, the averaged weights), or a path.

    Raises `CheckpointError` naming the file when it is missing, unreadable or carries code.
    """
    directory = run_dir / "checkpoints"
    if choice == "last":
        found = checkpoint.latest_valid(directory)
        if found is None:
            raise CheckpointError(f"{directory}: no valid step checkpoint to use as --checkpoint last")
        skipped = [path.name for path in checkpoint.step_files(directory) if path.name > found[0].name]
        if skipped:  # say so: "last" is then not the newest state of the run
            log.warning("%s cannot be read; using the newest readable checkpoint, %s (older)",
                        ", ".join(skipped), found[0].name)
        return _from_checkpoint(*found)
    if choice == "best":
        path = directory / "best.pt"
        return _from_checkpoint(path, checkpoint.load(path))
    if choice == "ema":
        path = run_dir / "model_ema.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file; the run keeps averaged weights only with "
                                  "trainer.ema_decay, and writes them when it finishes")
    elif choice is None:
        path = run_dir / "model.pt"
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no such file; the run has not finished. "
                "Use --checkpoint last (newest step checkpoint) or --checkpoint best."
            )
    else:
        path = Path(choice)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint (expected best, last or a file)")
    loaded = checkpoint.read_torch_file(path, "weights file")
    if isinstance(loaded, dict) and "format" in loaded:
        # A pipeforge checkpoint: the checkpoint module checks its marker, version and fields.
        return _from_checkpoint(path, checkpoint.Checkpoint.from_payload(loaded, path))
    if not (isinstance(loaded, dict) and loaded and all(isinstance(k, str) for k in loaded)):
        raise CheckpointError(f"{path}: neither a pipeforge checkpoint nor a model state_dict")
    classes, example = _run_facts(directory)
    return Weights(path, loaded, classes, example)


def load_run(run_dir: Path, plugins: Plugins, choice: str | None) -> LoadedRun:
    """Rebuild the run's model on the CPU from `recipe.toml` with the weights `choice` names.

    The weights are read before anything is built, so a bad `--checkpoint` is refused first.
    No data is read: the model builder sees a `Datasets` with the run's classes and no splits
    (a model may size its output from `context.datasets.num_classes`).
    """
    recipe = read_recipe(run_dir, plugins, PREDICT_TABLES)
    weights = choose_weights(run_dir, choice)
    device = torch.device("cpu")
    context = build_context(run_dir, plugins, recipe, device)
    context.datasets = Datasets(splits={}, classes=weights.classes)
    model = load_weights(context, weights)
    return LoadedRun(run_dir, recipe, context, weights, model, device)


def build_context(run_dir: Path, plugins: Plugins, recipe: Recipe, device: torch.device) -> BuildContext:
    """A `BuildContext` as the engine makes one, after seeding as the engine does."""
    seed_everything(recipe.run.seed)
    return BuildContext(plugins.registry, recipe.run.seed, device.type, run_dir, recipe)


def load_weights(context: BuildContext, weights: Weights) -> torch.nn.Module:
    """Build the recipe's model, load `weights`, move it to the context's device, eval mode.

    Raises `CheckpointError` when the weights do not fit the model the recipe builds.
    """
    model = build_model(context)
    try:
        model.load_state_dict(weights.state_dict)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"{weights.path}: its weights do not fit the model that "
            f"{context.run_dir / 'recipe.toml'} builds: {detail}"
        ) from None
    context.model = model = place_model(model, torch.device(context.device), context.recipe).eval()
    return model


# ------------------------------------------------------------------------------ commands


def evaluate_run(run_dir: Path, plugins: Plugins, *, choice: str | None = None,
                 splits: list[str] | None = None) -> Evaluation:
    """Loss and the recipe's metrics on `splits` (default: every split but train).

    Uses the engine's own `evaluate` with the recipe's eval batch size and precision, so the
    run's `model.pt` reproduces the last row of metrics.jsonl. Runs on CUDA when available
    unless the recipe asks for the CPU.
    """
    recipe = read_recipe(run_dir, plugins)
    weights = choose_weights(run_dir, choice)  # a bad file is refused before the data is read
    device = resolve_device("cpu" if recipe.trainer.device == "cpu" else "auto")
    context = build_context(run_dir, plugins, recipe, device)
    context.datasets = datasets = build_datasets(context)
    wanted = splits or [name for name in datasets.splits if name != "train"]
    missing = [name for name in wanted if name not in datasets.splits]
    if missing:
        raise UsageError(f"the dataset has no split {', '.join(missing)} (it has: {', '.join(datasets.splits)})")
    model = load_weights(context, weights)
    evaluator = Evaluator.build(recipe, datasets, wanted, model, context.build("loss", recipe.loss),
                                build_metrics(context), device, Dist())
    results: dict[str, float] = {}
    for name in wanted:
        results.update(evaluator.run(name))
    return Evaluation(run_dir, weights.path, wanted, results, list(datasets.skipped))


def predict(run_dir: Path, plugins: Plugins, inputs: list[str], *, choice: str | None = None) -> list[Prediction]:
    """Classify raw inputs, read by the run's dataset component's `read_inputs`; one per sample.

    Raises `UsageError` when the dataset has no input reader, `DataError` (from the plugin)
    naming an input that cannot be read.
    """
    run = load_run(run_dir, plugins, choice)
    bound = run.recipe.dataset.bound
    reader = bound.component.reader()
    if reader is None:
        raise UsageError(
            f"dataset '{bound.component.name}' does not support predict: its component has no "
            "input reader (read_inputs)"
        )
    batch = reader(bound.params, list(inputs), run.context)
    if not isinstance(batch, torch.Tensor) or batch.dim() == 0 or batch.shape[0] == 0:
        raise DataError(f"no samples found in {', '.join(inputs)}")
    with torch.no_grad():
        try:
            outputs = run.model(batch.to(run.device))
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise DataError(
                f"the inputs ({', '.join(inputs)}) do not fit the model: samples of shape "
                f"{tuple(batch.shape[1:])} ({detail})"
            ) from None
    probabilities = torch.softmax(outputs.float(), dim=1).cpu()
    names = _class_names(run.weights.classes, probabilities.shape[1])
    found = []
    for row in probabilities:
        index = int(row.argmax())
        found.append(Prediction(names[index], index, {n: float(p) for n, p in zip(names, row)}))
    return found


# ------------------------------------------------------------------------------ helpers


def _from_checkpoint(path: Path, saved: checkpoint.Checkpoint) -> Weights:
    return Weights(path, saved.model, saved.classes, saved.example_input)


def _run_facts(directory: Path) -> tuple[list[str] | None, torch.Tensor | None]:
    """Classes and example input from the run's newest valid checkpoint, else best.pt."""
    found = checkpoint.latest_valid(directory)
    if found is None and (directory / "best.pt").is_file():
        try:
            found = directory / "best.pt", checkpoint.load(directory / "best.pt")
        except CheckpointError:
            found = None
    if found is None:
        return None, None
    saved = found[1]
    return saved.classes, saved.example_input


def _class_names(classes: list[str] | None, count: int) -> list[str]:
    """The run's class names; outputs beyond them (or without any) are named by index."""
    known = list(classes or [])
    return [known[i] if i < len(known) else str(i) for i in range(count)]


def tensor_output(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise PluginError(f"model '{name}' returns {type(value).__name__}; export needs a model that returns one tensor")
    return value
