"""The torch catalog (issue 19): every torch.optim optimizer, lr scheduler and torch.nn loss that
fits the loop, by registered name with validated params.

- Every params model matches the signature of the pinned torch class (names, defaults, types);
  each deliberate difference is listed here with its reason, so a torch upgrade that adds or
  renames an argument fails a test instead of drifting.
- Each optimizer and each scheduler trains the popularity task for 2 epochs (in process, tiny
  data) and resumes exactly after a stop; tests/test_catalog_kill.py kills a sample with -9.
- Label smoothing, "balanced" class weights, pos_weight, no_decay and per-module lr equal the
  same training written in plain torch.
- `list-plugins` and `show` stay readable at 80 columns with the whole catalog.
"""

from __future__ import annotations

import ast
import json
import inspect
import io
import math
import signal
import types
import typing
from pathlib import Path

import pytest
import torch
from rich.console import Console

import pipeforge
from conftest import ROOT
from pipeforge import Callback, Interrupted, RecipeError, StopRequest
from pipeforge.builtin import optim_params
from pipeforge.builtin.params import MLPParams
from pipeforge.builtin.synthetic import build_mlp
from pipeforge.context import BuildContext, Datasets
from pipeforge.plugins import discover
from pipeforge.recipe import validate_recipe
from pipeforge.registry import Component, NoParams, PluginInfo
from pipeforge.setup import seed_everything

popularity = pytest.importorskip("pipeforge_popularity.build")
from pipeforge_popularity.plugin import ProductsParams, SimpleNetParams  # noqa: E402

CATALOG_RECIPE = ROOT / "tests" / "data" / "catalog.toml"


@pytest.fixture(scope="module")
def plugins():
    return discover()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------ the catalog vs torch

# Registered name → torch class, per kind.
TORCH: dict[str, dict[str, str]] = {
    "optimizer": {
        "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam",
        "rmsprop": "RMSprop", "adagrad": "Adagrad", "adadelta": "Adadelta", "adafactor": "Adafactor",
        "asgd": "ASGD", "rprop": "Rprop", "sparse_adam": "SparseAdam", "muon": "Muon", "lbfgs": "LBFGS",
    },
    "scheduler": {
        "step_lr": "StepLR", "multistep": "MultiStepLR", "constant": "ConstantLR", "linear": "LinearLR",
        "exponential": "ExponentialLR", "cosine": "CosineAnnealingLR",
        "cosine_warm_restarts": "CosineAnnealingWarmRestarts", "cyclic": "CyclicLR", "one_cycle": "OneCycleLR",
        "polynomial": "PolynomialLR", "reduce_on_plateau": "ReduceLROnPlateau",
    },
    "loss": {
        "cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss", "bce": "BCELoss", "bce_with_logits": "BCEWithLogitsLoss",
        "mse": "MSELoss", "l1": "L1Loss", "smooth_l1": "SmoothL1Loss", "huber": "HuberLoss", "kl_div": "KLDivLoss",
        "poisson_nll": "PoissonNLLLoss", "hinge_embedding": "HingeEmbeddingLoss", "soft_margin": "SoftMarginLoss",
        "multi_margin": "MultiMarginLoss", "multilabel_margin": "MultiLabelMarginLoss",
        "multilabel_soft_margin": "MultiLabelSoftMarginLoss",
    },
}

# torch classes with no component, and why (the README's catalog says the same).
LEFT_OUT: dict[str, dict[str, str]] = {
    "optimizer": {"Optimizer": "the base class"},
    "scheduler": {
        "LRScheduler": "the base class",
        "LambdaLR": "its factor is a Python callable, which a recipe cannot hold",
        "MultiplicativeLR": "its factor is a Python callable, which a recipe cannot hold",
        "SequentialLR": "chains scheduler objects; [scheduler]'s warm-up covers its main use (a warm-up, then any scheduler)",
        "ChainedScheduler": "chains scheduler objects, which a recipe table cannot name",
    },
    "loss": {
        "CTCLoss": "takes input and target lengths besides outputs and targets",
        "CosineEmbeddingLoss": "compares two inputs: loss(x1, x2, y)",
        "MarginRankingLoss": "ranks two inputs: loss(x1, x2, y)",
        "TripletMarginLoss": "takes an anchor, a positive and a negative",
        "TripletMarginWithDistanceLoss": "takes an anchor, a positive and a negative (and a distance callable)",
        "GaussianNLLLoss": "takes the variance as a third input",
        "LinearCrossEntropyLoss": "holds the weights of its own linear layer, which belong in the model",
        "NLLLoss2d": "a deprecated alias of NLLLoss (nll)",
    },
}


def torch_classes(kind: str) -> dict[str, type]:
    if kind == "optimizer":
        found = {n: getattr(torch.optim, n) for n in torch.optim.__all__}
        return {n: c for n, c in found.items() if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer)}
    if kind == "scheduler":
        found = {n: getattr(torch.optim.lr_scheduler, n) for n in torch.optim.lr_scheduler.__all__}
        return {n: c for n, c in found.items() if inspect.isclass(c)}
    found = {n: getattr(torch.nn, n) for n in dir(torch.nn) if not n.startswith("_")}
    return {n: c for n, c in found.items() if inspect.isclass(c) and issubclass(c, torch.nn.modules.loss._Loss)}


@pytest.mark.parametrize("kind", list(TORCH))
def test_every_torch_class_is_in_the_catalog_or_left_out_with_a_reason(kind, plugins):
    classes = set(torch_classes(kind))
    assert classes == set(TORCH[kind].values()) | set(LEFT_OUT[kind]), "a torch class to add or leave out"
    assert not set(TORCH[kind].values()) & set(LEFT_OUT[kind])
    builtin = {c.name for c in plugins.registry.all_components()
               if c.kind == kind and plugins.registry.owner(kind, c.name).distribution == "pipeforge"}
    assert builtin == set(TORCH[kind]), "every registered component is compared with its torch class"


# Arguments no component takes, and why.
OMITTED = {
    "params": "the engine gives the model's parameters (in groups with no_decay / lr_groups)",
    "optimizer": "the engine gives the run's optimizer",
    "last_epoch": "the engine restores a resumed scheduler from its state dict",
    "maximize": "the loop minimises the loss",
    "capturable": "for CUDA-graph capture, which the loop does not do",
    "differentiable": "for differentiating through the update, which the loop does not do",
    "size_average": "deprecated by torch (reduction replaces it)",
    "reduce": "deprecated by torch (reduction replaces it)",
    "reduction": "the engine weights each batch's loss by its samples, so every loss is a mean",
}
GROUP_OPTIONS = {
    "lr_groups": "pipeforge's per-submodule learning rates (param groups)",
    "no_decay": "pipeforge's parameters without weight decay (param groups)",
}
RUN_LENGTH = "None: the run's scheduler steps after the warm-up (context.schedule_length)"
PER_GROUP = "one value for every param group; with lr_groups pipeforge scales it per group"
BALANCED = '"balanced" added: computed from the training split\'s targets'

# (kind, name) → the deliberate differences from torch's signature, each with its reason:
# omitted (a torch argument that is no param), renamed (torch name → ours), added (ours only),
# default / type / literal (a param whose default, TOML type or allowed values differ).
DIFFERENT: dict[tuple[str, str], dict[str, dict[str, typing.Any]]] = {
    ("optimizer", "sgd"): {"default": {"lr": "0.01, pipeforge's default from before torch had one (1e-3): "
                                              "recipes that leave lr out train as they did"}},
    ("optimizer", "adafactor"): {"renamed": {"eps": ("eps1", "eps2")},
                                 "why": "a pair holding None, which TOML cannot write: two params"},
    ("optimizer", "muon"): {"added": {
        "adamw_lr": "Muon trains only 2-D weights: AdamW trains the rest (as Muon's authors do)",
        "adamw_betas": "AdamW's betas for the rest", "adamw_eps": "AdamW's eps for the rest",
        "adamw_weight_decay": "AdamW's weight decay for the rest",
        "adamw_params": "2-D weights to give AdamW too (an output layer, an embedding)"}},
    ("optimizer", "lbfgs"): {"refused": "closure"},
    ("scheduler", "constant"): {"default": {"factor": "1: a constant lr, e.g. after a warm-up",
                                            "total_iters": "0: a constant lr, e.g. after a warm-up"}},
    ("scheduler", "linear"): {"default": {
        "start_factor": "1: a decay from lr (the warm-up options are the warm-up torch's default makes)",
        "end_factor": "0: a decay to 0", "total_iters": RUN_LENGTH}},
    ("scheduler", "cosine"): {"renamed": {"T_max": "t_max"}, "default": {"t_max": RUN_LENGTH}},
    ("scheduler", "cosine_warm_restarts"): {"renamed": {"T_0": "t_0", "T_mult": "t_mult"}},
    ("scheduler", "cyclic"): {
        "omitted": {"scale_fn": "a Python callable", "scale_mode": "applies to scale_fn only"},
        "default": {"base_lr": "None: the optimizer's lr"},
        "type": {"base_lr": PER_GROUP, "max_lr": PER_GROUP}},
    ("scheduler", "one_cycle"): {
        "omitted": {"total_steps": RUN_LENGTH, "epochs": RUN_LENGTH, "steps_per_epoch": RUN_LENGTH},
        "type": {"max_lr": PER_GROUP, "base_momentum": PER_GROUP, "max_momentum": PER_GROUP}},
    ("scheduler", "polynomial"): {"default": {"total_iters": RUN_LENGTH}},
    ("scheduler", "reduce_on_plateau"): {
        "added": {"monitor": "the metrics key the engine steps it with after each epoch"},
        "default": {"mode": '"auto": min for keys ending in "loss", max for the rest'},
        "literal": {"mode": '"auto" added'},
        "type": {"min_lr": PER_GROUP}},
    ("loss", "cross_entropy"): {"type": {"weight": BALANCED}},
    ("loss", "nll"): {"type": {"weight": BALANCED}},
    ("loss", "multi_margin"): {"type": {"weight": BALANCED}},
    ("loss", "bce_with_logits"): {"type": {"pos_weight": BALANCED}},
    ("loss", "kl_div"): {"omitted": {}, "keeps": "reduction",
                         "default": {"reduction": '"batchmean", the KL divergence (torch warns that "mean" is not)'}},
}

EMPTY = object()


def plain(value: typing.Any) -> typing.Any:
    """A default as a recipe writes it: tuples are arrays."""
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def split_top(text: str) -> list[str]:
    """`a | b[c | d]` → ["a", "b[c | d]"]: split on `|` outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def torch_kinds(annotation: typing.Any) -> tuple[frozenset[str], tuple | None]:
    """The TOML kinds an argument of torch's signature takes (annotations may be strings):
    float, int, bool, str, list, none; a tensor alongside a number is dropped (a tensor lr is
    for graph capture), a tensor alone is a list (an array in TOML)."""
    if annotation is inspect.Parameter.empty:
        return frozenset({"unannotated"}), None
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    kinds, literals = set(), None
    for part in split_top(text.replace("typing.", "")):
        base = part.split("[", 1)[0].rsplit(".", 1)[-1]
        if base == "Literal":
            literals = tuple(ast.literal_eval("[" + part[part.index("[") + 1:-1] + "]"))
            kinds |= {type(v).__name__ for v in literals}
        elif base == "Optional":
            inner, _ = torch_kinds(part[part.index("[") + 1:-1])
            kinds |= inner | {"none"}
        elif base in ("tuple", "list", "Iterable", "Sequence"):
            kinds.add("list")
        elif base in ("None", "NoneType"):
            kinds.add("none")
        else:
            kinds.add(base)
    if "Tensor" in kinds:
        kinds.discard("Tensor")
        if not kinds - {"none"}:
            kinds.add("list")
    return frozenset(kinds), literals


def our_kinds(annotation: typing.Any) -> tuple[frozenset[str], tuple | None]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return our_kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        found = [our_kinds(arg) for arg in args]
        literals = [values for _, values in found if values is not None]
        return frozenset().union(*(kinds for kinds, _ in found)), (literals[0] if literals else None)
    if origin is typing.Literal:
        return frozenset(type(v).__name__ for v in args), args
    if origin in (list, tuple):
        return frozenset({"list"}), None
    if origin is dict:
        return frozenset({"table"}), None
    if annotation is type(None):
        return frozenset({"none"}), None
    return frozenset({annotation.__name__}), None


def differences(kind: str, name: str, plugins) -> list[str]:
    """What differs between the params model and torch's signature beyond `DIFFERENT`, and
    what `DIFFERENT` lists that does not differ (a stale entry)."""
    component = plugins.registry.get(kind, name)
    cls = getattr({"optimizer": torch.optim, "scheduler": torch.optim.lr_scheduler, "loss": torch.nn}[kind],
                  TORCH[kind][name])
    listed = DIFFERENT.get((kind, name), {})
    theirs = {n: p for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
    ours = component.params.model_fields
    omitted = {**{k: v for k, v in OMITTED.items() if k != listed.get("keeps")}, **listed.get("omitted", {})}
    added = {**(GROUP_OPTIONS if kind == "optimizer" else {}), **listed.get("added", {})}
    renamed = listed.get("renamed", {})
    found: list[str] = []
    compared: set[str] = set()
    for key in [*listed.get("omitted", {}), *renamed]:
        if key not in theirs:
            found.append(f"'{key}' is listed but torch has no such argument")
    for tname, param in theirs.items():
        if tname in omitted:
            continue
        target = renamed.get(tname, tname)
        names = target if isinstance(target, tuple) else (target,)
        missing = [n for n in names if n not in ours]
        if missing:
            found.append(f"torch's '{tname}' is no param" + (f" (as {', '.join(missing)})" if target != tname else ""))
            continue
        compared |= set(names)
        if len(names) > 1:  # split into several params: compared by a test of its own
            continue
        field = ours[target]
        their_default = EMPTY if param.default is inspect.Parameter.empty else plain(param.default)
        our_default = EMPTY if field.is_required() else plain(field.get_default(call_default_factory=True))
        same_default = (their_default is EMPTY) == (our_default is EMPTY) and (
            their_default is EMPTY or their_default == our_default)
        their_kinds, their_literals = torch_kinds(param.annotation)
        kinds, literals = our_kinds(field.annotation)
        if target in listed.get("default", {}) and our_default is None:
            kinds -= {"none"}  # None stands for a default the run decides
        checks = [("default", same_default, f"default {their_default!r} in torch, {our_default!r} here"),
                  ("type", their_kinds == kinds, f"takes {sorted(their_kinds)} in torch, {sorted(kinds)} here")]
        if their_literals is not None and literals is not None:
            checks.append(("literal", set(their_literals) == set(literals),
                           f"allows {their_literals} in torch, {literals} here"))
        for what, same, detail in checks:
            if not same and target not in listed.get(what, {}):
                found.append(f"'{target}': {detail}")
            elif same and target in listed.get(what, {}):
                found.append(f"'{target}' is listed under {what} but does not differ")
    for extra in set(ours) - compared:
        if extra not in added:
            found.append(f"'{extra}' is not torch's and not listed as added")
    for listed_added in set(listed.get("added", {})) - set(ours):
        found.append(f"'{listed_added}' is listed as added but is no param")
    return found


SIGNATURES = [(kind, name) for kind, names in TORCH.items() for name in names]


@pytest.mark.parametrize("kind, name", SIGNATURES, ids=[f"{k}:{n}" for k, n in SIGNATURES])
def test_params_match_the_torch_signature(kind, name, plugins):
    refused = DIFFERENT.get((kind, name), {}).get("refused")
    if refused:  # registered to say why it cannot be used: no params to compare
        with pytest.raises(RecipeError, match=refused):
            validate_recipe({**POPULARITY, "optimizer": {"name": name}}, plugins.registry)
        return
    assert differences(kind, name, plugins) == []


def test_the_signature_check_catches_drift(plugins, monkeypatch):
    """A torch that renamed or added an argument, or changed a default, fails the check."""
    real = inspect.signature

    def drifted(obj, *args, **kwargs):
        sig = real(obj, *args, **kwargs)
        if obj is torch.optim.RMSprop.__init__:
            params = [p.replace(default=0.95) if p.name == "alpha" else p for p in sig.parameters.values()]
            params.append(inspect.Parameter("new_arg", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=float))
            return sig.replace(parameters=params)
        return sig

    monkeypatch.setattr(inspect, "signature", drifted)
    found = differences("optimizer", "rmsprop", plugins)
    assert any("'alpha': default 0.95 in torch, 0.99 here" in f for f in found)
    assert any("torch's 'new_arg' is no param" in f for f in found)


def test_split_and_extra_params_match_torch_too():
    """Adafactor's eps pair is two params; muon's AdamW params default to AdamW's own."""
    eps = inspect.signature(torch.optim.Adafactor).parameters["eps"].default
    fields = optim_params.AdafactorParams.model_fields
    assert (fields["eps1"].default, fields["eps2"].default) == eps
    adamw = inspect.signature(torch.optim.AdamW).parameters
    muon = optim_params.MuonParams.model_fields
    for key in ("betas", "eps", "weight_decay"):
        assert plain(adamw[key].default) == plain(muon[f"adamw_{key}"].default), key


def test_every_catalog_component_has_a_one_line_description(plugins):
    for kind in TORCH:
        for name in TORCH[kind]:
            description = plugins.registry.get(kind, name).description
            assert description and "\n" not in description and len(description) <= 120, name
            for field_name, field in plugins.registry.get(kind, name).params.model_fields.items():
                assert field.description, f"{kind} {name}: {field_name} has no description"


# ------------------------------------------------------------------------------ training every one

POPULARITY = {
    "run": {"name": "catalog", "seed": 3},
    "dataset": {"name": "popularity.products", "n_train": 64, "n_test": 32},
    "model": {"name": "popularity.simplenet"},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "trainer": {"epochs": 2, "batch_size": 16, "device": "cpu", "shuffle": True},
    "callbacks": [],
}
STEPS = 8  # 64 samples in batches of 16, for 2 epochs

# The params each optimizer trains with here (sparse_adam and lbfgs have tests of their own).
OPTIMIZERS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adam": {"lr": 0.01, "amsgrad": True},
    "adamw": {"lr": 0.01, "no_decay": ["bias"]},
    "adamax": {"lr": 0.01},
    "nadam": {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.01},
    "radam": {"lr": 0.01},
    "rmsprop": {"lr": 0.005, "momentum": 0.5, "centered": True},
    "adagrad": {"lr": 0.05, "lr_decay": 0.01},
    "adadelta": {},
    "adafactor": {"lr": 0.01},
    "asgd": {"lr": 0.05, "t0": 2},
    "rprop": {"lr": 0.001},
    "muon": {"lr": 0.02, "adamw_lr": 0.005, "lr_groups": {"fc2": 0.01}},
}
SCHEDULERS = {
    "step_lr": {"step_size": 1, "gamma": 0.5},
    "multistep": {"milestones": [1, 3]},
    "constant": {"factor": 0.5, "total_iters": 1},
    "linear": {"start_factor": 0.5},
    "exponential": {"gamma": 0.8},
    "cosine": {"eta_min": 0.001},
    "cosine_warm_restarts": {"t_0": 2, "t_mult": 2},
    "cyclic": {"max_lr": 0.1, "step_size_up": 2, "mode": "triangular2"},
    "one_cycle": {"max_lr": 0.1, "three_phase": True},
    "polynomial": {"power": 2.0},
    "reduce_on_plateau": {"monitor": "test_loss", "patience": 0, "factor": 0.5},
}


class Recorder(Callback):
    """Every param group's lr at the start, then after each optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_fit_start(self, state):
        self.lrs.append([group["lr"] for group in state.optimizer.param_groups])

    def on_batch_end(self, state):
        self.lrs.append([group["lr"] for group in state.optimizer.param_groups])


class StopAt(Callback):
    """Asks to stop after the given optimizer step, as a signal handler would."""

    def __init__(self, stop: StopRequest, step: int) -> None:
        self.stop, self.step = stop, step

    def on_batch_end(self, state):
        if state.global_step == self.step:
            self.stop.signal = signal.SIGTERM


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trains_and_resumes_exactly(run: dict, tmp_path: Path, stop_at: int = 6) -> list[list[float]]:
    """Train `run` (asserting a finite loss and finite weights), then train it again stopped
    after step `stop_at` and resumed, which must end bitwise where the first run ends.
    Returns the first run's lrs (`Recorder.lrs`)."""
    recorder = Recorder()
    reference = pipeforge.run(run, run_dir=tmp_path / "reference", callbacks=[recorder])
    assert [row["epoch"] for row in reference.history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["test_loss"]) for row in reference.history)
    assert all(torch.isfinite(t).all() for t in weights(reference.state.model).values())
    stop = StopRequest()
    with pytest.raises(Interrupted):
        pipeforge.run(run, run_dir=tmp_path / "run", stop=stop, callbacks=[StopAt(stop, stop_at)])
    resumed = pipeforge.resume(tmp_path / "run")
    mine, theirs = weights(resumed.state.model), weights(reference.state.model)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs), "resumed weights differ"
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()
    return recorder.lrs


def test_every_trainable_optimizer_is_trained_here(plugins):
    assert set(OPTIMIZERS) | {"sparse_adam", "lbfgs"} == set(plugins.registry.names("optimizer"))
    assert set(SCHEDULERS) == set(plugins.registry.names("scheduler"))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_trains_2_epochs_and_resumes_exactly(name, tmp_path):
    lrs = trains_and_resumes_exactly({**POPULARITY, "optimizer": {"name": name, **OPTIMIZERS[name]}}, tmp_path)
    assert len(lrs) == STEPS + 1


SCHEDULER_CASES = [(name, interval) for name in SCHEDULERS for interval in ("epoch", "step", "step+warmup")
                   if name != "reduce_on_plateau" or interval == "epoch"]


@pytest.mark.parametrize("name, interval", SCHEDULER_CASES, ids=[f"{n}-{i}" for n, i in SCHEDULER_CASES])
def test_each_scheduler_trains_2_epochs(name, interval, tmp_path):
    """Per epoch and per step, and behind the engine's warm-up (resumed exactly, through
    the warm-up's SequentialLR state)."""
    table = {"name": name, **SCHEDULERS[name], "interval": interval.split("+")[0]}
    run = {**POPULARITY, "scheduler": table}
    if interval == "step+warmup":
        table["warmup_steps"] = 3
        lrs = trains_and_resumes_exactly(run, tmp_path, stop_at=5)
    else:
        recorder = Recorder()
        result = pipeforge.run(run, run_dir=tmp_path / "run", callbacks=[recorder])
        assert all(math.isfinite(row["train_loss"]) for row in result.history)
        lrs = recorder.lrs
    assert len(lrs) == STEPS + 1 and all(math.isfinite(lr) and lr >= 0 for step in lrs for lr in step)
    if name != "reduce_on_plateau":  # it changes the lr only when the metric plateaus
        assert len({step[0] for step in lrs}) > 1, "the schedule never changed the lr"


# Per-step schedules of the new schedulers, as torch itself steps them.
TORCH_SCHEDULES = {
    "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8),
    "cosine_warm_restarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 2, 2),
    "cyclic": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.05, 0.1, step_size_up=2, mode="triangular2"),
    "polynomial": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, STEPS, 2.0),
    "linear": lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.5, 0.0, STEPS),
}


@pytest.mark.parametrize("name", list(TORCH_SCHEDULES))
def test_a_per_step_schedule_is_torchs(name, tmp_path):
    recorder = Recorder()
    pipeforge.run({**POPULARITY, "scheduler": {"name": name, **SCHEDULERS[name], "interval": "step"}},
                  run_dir=tmp_path / "run", callbacks=[recorder])
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.05, momentum=0.9)
    schedule = TORCH_SCHEDULES[name](optimizer)
    expected = []
    for _ in range(STEPS):
        optimizer.step()
        schedule.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert [step[0] for step in recorder.lrs[1:]] == pytest.approx(expected, rel=1e-12)


def test_per_module_lr_keeps_its_ratio_under_one_cycle_and_cyclic(tmp_path):
    for table in ({"name": "one_cycle", "max_lr": 0.1}, {"name": "cyclic", "max_lr": 0.1, "step_size_up": 3}):
        recorder = Recorder()
        run = {**POPULARITY, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "lr_groups": {"fc2": 0.005}},
               "scheduler": {**table, "interval": "step"}}
        pipeforge.run(run, run_dir=tmp_path / table["name"], callbacks=[recorder])
        assert all(fc2 == pytest.approx(rest / 10, rel=1e-9) for rest, fc2 in recorder.lrs), table["name"]


# ------------------------------------------------------------------------------ the same in plain torch


def hand_setup(seed: int = 3, n_train: int = 64):
    """What the engine builds for POPULARITY, by hand: seed, then the data, then the model."""
    seed_everything(seed)
    context = BuildContext(registry=None, seed=seed, device="cpu")
    data = popularity.build_products(ProductsParams(n_train=n_train, n_test=32), context)
    model = popularity.build_simplenet(SimpleNetParams(), context)
    x, y = data.splits["train"].tensors
    return model, x, y


def hand_train(model, x, y, optimizer, loss_fn, scheduler=None, epochs: int = 2, batch: int = 16) -> None:
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            optimizer.zero_grad()
            loss_fn(model(x[start:start + batch]), y[start:start + batch]).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()


def assert_same_weights(mine: torch.nn.Module, theirs: torch.nn.Module) -> None:
    a, b = weights(mine), weights(theirs)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key


def in_order(**changes) -> dict:
    """POPULARITY without shuffling (the hand loops take the batches in order)."""
    return {**POPULARITY, "trainer": {**POPULARITY["trainer"], "shuffle": False}, **changes}


def test_label_smoothing_is_torchs(tmp_path):
    result = pipeforge.run(in_order(loss={"name": "cross_entropy", "label_smoothing": 0.2}), run_dir=tmp_path / "run")
    model, x, y = hand_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hand_train(model, x, y, optimizer, torch.nn.CrossEntropyLoss(label_smoothing=0.2))
    assert_same_weights(result.state.model, model)


def test_balanced_class_weights_are_computed_from_the_training_labels(tmp_path):
    result = pipeforge.run(in_order(loss={"name": "cross_entropy", "weight": "balanced", "label_smoothing": 0.1}),
                           run_dir=tmp_path / "run")
    model, x, y = hand_setup()
    counts = torch.bincount(y, minlength=2).float()
    assert counts[0] != counts[1]  # the popularity labels are imbalanced, so the weights matter
    weight = len(y) / (2 * counts)  # scikit-learn's "balanced"
    built = result.state.recipe.loss.bound.build(BuildContext(None, 3, "cpu", datasets=result.state.datasets))
    assert torch.equal(built.weight, weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hand_train(model, x, y, optimizer, torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1))
    assert_same_weights(result.state.model, model)
    listed = pipeforge.run(in_order(loss={"name": "cross_entropy", "weight": weight.tolist(), "label_smoothing": 0.1}),
                           run_dir=tmp_path / "listed")
    assert_same_weights(listed.state.model, model)


def test_no_decay_is_weight_decay_0_for_biases_in_plain_torch(tmp_path):
    optimizer = {"name": "adamw", "lr": 0.01, "weight_decay": 0.5, "no_decay": ["bias"]}
    result = pipeforge.run(in_order(optimizer=optimizer), run_dir=tmp_path / "run")
    model, x, y = hand_setup()
    decayed = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    hand = torch.optim.AdamW([{"params": decayed}, {"params": biases, "weight_decay": 0.0}], lr=0.01, weight_decay=0.5)
    hand_train(model, x, y, hand, torch.nn.CrossEntropyLoss())
    assert_same_weights(result.state.model, model)
    everything = pipeforge.run(in_order(optimizer={**optimizer, "no_decay": []}), run_dir=tmp_path / "all")
    assert not torch.equal(everything.state.model.fc1.bias, result.state.model.fc1.bias)


def test_per_module_lr_is_param_groups_in_plain_torch(tmp_path):
    """lr_groups with a per-step cosine: both groups follow the schedule, each from its own lr."""
    run = in_order(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "lr_groups": {"fc1": 0.2}},
                   scheduler={"name": "cosine", "interval": "step"})
    result = pipeforge.run(run, run_dir=tmp_path / "run")
    model, x, y = hand_setup()
    hand = torch.optim.SGD([{"params": model.fc2.parameters()}, {"params": model.fc1.parameters(), "lr": 0.2}],
                           lr=0.05, momentum=0.9)
    hand_train(model, x, y, hand, torch.nn.CrossEntropyLoss(),
               torch.optim.lr_scheduler.CosineAnnealingLR(hand, STEPS))
    assert_same_weights(result.state.model, model)


def test_no_decay_matches_names_and_norm_layer_classes():
    from pipeforge.builtin.optim import parameter_groups

    model = torch.nn.Sequential()
    model.add_module("encoder", torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8)))
    model.add_module("head", torch.nn.Linear(8, 2))
    model.add_module("final_norm", torch.nn.LayerNorm(2))
    params = optim_params.AdamWParams(no_decay=["bias", "norm"], lr_groups={"head": 0.1, "encoder.0": 0.01})
    groups = parameter_groups(model, params)
    named = {id(p): n for n, p in model.named_parameters()}
    found = [(sorted(named[id(p)] for p in g["params"]), g.get("lr"), g.get("weight_decay")) for g in groups]
    assert found == [
        (["encoder.1.bias", "encoder.1.weight", "final_norm.bias", "final_norm.weight"], None, 0.0),
        (["encoder.0.weight"], 0.01, None),
        (["encoder.0.bias"], 0.01, 0.0),
        (["head.weight"], 0.1, None),
        (["head.bias"], 0.1, 0.0),
    ]
    assert parameter_groups(model, optim_params.AdamWParams()) == list(model.parameters())  # no options: as before


# A multi-label task for the BCE family: 3 labels of different rarity.
def build_multilabel(params, context: BuildContext) -> Datasets:
    generator = torch.Generator().manual_seed(context.seed)

    def split(count: int) -> torch.utils.data.TensorDataset:
        x = torch.randn(count, 4, generator=generator)
        y = torch.stack([x[:, 0] > 0, x[:, 1] > 1.0, x[:, 2] + x[:, 3] > 1.5], dim=1).float()
        return torch.utils.data.TensorDataset(x, y)

    return Datasets({"train": split(64), "val": split(32)})


def with_components(*components: Component):
    """The installed plugins plus test-only components."""
    found = discover()
    for component in components:
        found.registry.add(component, PluginInfo("test", "tests", "0", "tests"))
    return found


@pytest.fixture
def multilabel():
    return with_components(Component("dataset", "test.multilabel", NoParams, build_multilabel))


@pytest.mark.parametrize("pos_weight", [[1.0, 3.0, 6.0], "balanced"])
def test_pos_weight_is_torchs(pos_weight, multilabel, tmp_path):
    run = {**in_order(), "dataset": {"name": "test.multilabel"}, "metrics": [],
           "model": {"name": "mlp", "in_features": 4, "hidden": [8], "out_features": 3},
           "loss": {"name": "bce_with_logits", "pos_weight": pos_weight}}
    result = pipeforge.run(run, run_dir=tmp_path / "run", plugins=multilabel)
    seed_everything(3)
    context = BuildContext(registry=None, seed=3, device="cpu")
    x, y = build_multilabel(None, context).splits["train"].tensors
    model = build_mlp(MLPParams(in_features=4, hidden=[8], out_features=3), context)
    if pos_weight == "balanced":
        positives = y.sum(0)
        weight = ((len(y) - positives) / positives).float()
        assert len(set(weight.tolist())) == 3  # three different weights
    else:
        weight = torch.tensor(pos_weight)
    hand_train(model, x, y, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
               torch.nn.BCEWithLogitsLoss(pos_weight=weight))
    assert_same_weights(result.state.model, model)


# ------------------------------------------------------------------------------ what cannot be used, said clearly


def test_lbfgs_is_refused_at_validation_with_the_reason(plugins):
    with pytest.raises(RecipeError) as caught:
        validate_recipe({**POPULARITY, "optimizer": {"name": "lbfgs", "lr": 1}}, plugins.registry)
    assert "optimizer: 'lbfgs'" in str(caught.value) and "closure" in str(caught.value)


def test_sparse_adam_refuses_dense_parameters_and_trains_sparse_embeddings(tmp_path):
    with pytest.raises(RecipeError, match=r"optimizer.name: 'sparse_adam' needs sparse gradients.*fc1.weight"):
        pipeforge.run({**POPULARITY, "optimizer": {"name": "sparse_adam"}}, run_dir=tmp_path / "dense")

    def data(params, context):
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 20, (64,), generator=generator)
        return Datasets({"train": torch.utils.data.TensorDataset(ids, ids % 2),
                         "val": torch.utils.data.TensorDataset(ids[:16], ids[:16] % 2)}, classes=["even", "odd"])

    embedding = Component("model", "test.embedding", NoParams,
                          lambda params, context: torch.nn.Embedding(20, 2, sparse=True))
    run = {**POPULARITY, "dataset": {"name": "test.ids"}, "model": {"name": "test.embedding"},
           "optimizer": {"name": "sparse_adam", "lr": 0.1}, "trainer": {**POPULARITY["trainer"], "epochs": 4}}
    result = pipeforge.run(run, run_dir=tmp_path / "sparse",
                           plugins=with_components(Component("dataset", "test.ids", NoParams, data), embedding))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_muon_takes_2d_weights_and_adamw_the_rest():
    from pipeforge.builtin.optim import build_muon

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    context = BuildContext(registry=None, seed=0, device="cpu", model=model)
    optimizer = build_muon(optim_params.MuonParams(lr=0.02, adamw_lr=0.004, adamw_params=["2."]), context)
    muon, adamw = optimizer.parts
    assert [p for g in muon.param_groups for p in g["params"]] == [model[0].weight]
    assert {id(p) for g in adamw.param_groups for p in g["params"]} == {
        id(p) for p in [model[0].bias, model[1].weight, model[1].bias, model[2].weight, model[2].bias]}
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 0.004]
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    again = build_muon(optim_params.MuonParams(lr=0.02, adamw_lr=0.004, adamw_params=["2."]), context)
    again.load_state_dict(state)
    assert again.param_groups[0]["params"] == [model[0].weight] and len(again.param_groups) == 2
    assert torch.equal(again.parts[0].state[model[0].weight]["momentum_buffer"],
                       muon.state[model[0].weight]["momentum_buffer"])


@pytest.mark.parametrize("groups, message", [
    ({"backbone": 0.01}, "optimizer.lr_groups.backbone: the model has no submodule 'backbone'; its top-level "
                         "submodules: fc1, fc2"),
    ({"fc_1": 0.01}, "optimizer.lr_groups.fc_1: the model has no submodule 'fc_1'; did you mean 'fc1'?"),
])
def test_an_unknown_lr_group_names_the_recipe_key(groups, message, tmp_path):
    with pytest.raises(RecipeError) as caught:
        pipeforge.run({**POPULARITY, "optimizer": {"name": "adam", "lr_groups": groups}}, run_dir=tmp_path / "run")
    assert message in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_cycling_momentum_needs_an_optimizer_with_momentum(tmp_path):
    run = {**POPULARITY, "optimizer": {"name": "adagrad"}, "scheduler": {"name": "one_cycle", "max_lr": 0.1}}
    with pytest.raises(RecipeError, match="scheduler.cycle_momentum: the optimizer 'adagrad' has no momentum or betas"):
        pipeforge.run(run, run_dir=tmp_path / "run")
    run["scheduler"]["cycle_momentum"] = False
    assert math.isfinite(pipeforge.run(run, run_dir=tmp_path / "ok").history[-1]["train_loss"])


def test_class_weights_that_cannot_fit_the_data_name_the_key(plugins, tmp_path):
    with pytest.raises(RecipeError, match="loss.weight: expected 2 weights, one per class of the dataset, found 3"):
        pipeforge.run({**POPULARITY, "loss": {"name": "cross_entropy", "weight": [1, 2, 3]}}, run_dir=tmp_path / "a")
    one_class = {**POPULARITY, "dataset": {**POPULARITY["dataset"], "threshold": 100.0},
                 "loss": {"name": "nll", "weight": "balanced"}}
    with pytest.raises(RecipeError, match=r"loss.weight: \"balanced\" cannot weight a class with no training sample "
                                          r"\('Popular'\)"):
        pipeforge.run(one_class, run_dir=tmp_path / "b")
    with pytest.raises(RecipeError, match='loss.weight: expected a list of weights or "balanced"'):
        validate_recipe({**POPULARITY, "loss": {"name": "cross_entropy", "weight": "balance"}}, plugins.registry)


# Example outputs and targets of each loss, and the same loss in plain torch.
def _logits() -> torch.Tensor:
    return torch.randn(6, 3, generator=torch.Generator().manual_seed(1))


def _classes() -> torch.Tensor:
    return torch.tensor([0, 2, 1, 1, 0, 2])


def _binary() -> torch.Tensor:
    return (torch.randn(6, 3, generator=torch.Generator().manual_seed(2)) > 0).float()


def _signs() -> torch.Tensor:
    return _binary() * 2 - 1


F = torch.nn.functional
LOSSES = {
    "cross_entropy": ({"ignore_index": 1, "label_smoothing": 0.1, "weight": [1.0, 2.0, 0.5]}, _logits, _classes,
                      lambda o, t: F.cross_entropy(o, t, torch.tensor([1.0, 2.0, 0.5]), ignore_index=1, label_smoothing=0.1)),
    "nll": ({"weight": [1.0, 2.0, 0.5]}, lambda: _logits().log_softmax(1), _classes,
            lambda o, t: F.nll_loss(o, t, torch.tensor([1.0, 2.0, 0.5]))),
    "bce": ({"weight": [1.0, 2.0, 3.0]}, lambda: _logits().sigmoid(), _binary,
            lambda o, t: F.binary_cross_entropy(o, t, torch.tensor([1.0, 2.0, 3.0]))),
    "bce_with_logits": ({"pos_weight": [2.0, 1.0, 0.5]}, _logits, _binary,
                        lambda o, t: F.binary_cross_entropy_with_logits(o, t, pos_weight=torch.tensor([2.0, 1.0, 0.5]))),
    "mse": ({}, _logits, _binary, F.mse_loss),
    "l1": ({}, _logits, _binary, F.l1_loss),
    "smooth_l1": ({"beta": 0.5}, _logits, _binary, lambda o, t: F.smooth_l1_loss(o, t, beta=0.5)),
    "huber": ({"delta": 0.5}, _logits, _binary, lambda o, t: F.huber_loss(o, t, delta=0.5)),
    "kl_div": ({}, lambda: _logits().log_softmax(1), lambda: _binary().add(0.1).softmax(1),
               lambda o, t: F.kl_div(o, t, reduction="batchmean")),
    "poisson_nll": ({"full": True}, _logits, lambda: _binary() * 3, lambda o, t: F.poisson_nll_loss(o, t, full=True)),
    "hinge_embedding": ({"margin": 0.5}, lambda: _logits().abs(), _signs,
                        lambda o, t: F.hinge_embedding_loss(o, t, margin=0.5)),
    "soft_margin": ({}, _logits, _signs, F.soft_margin_loss),
    "multi_margin": ({"p": 2, "margin": 0.5}, _logits, _classes, lambda o, t: F.multi_margin_loss(o, t, p=2, margin=0.5)),
    "multilabel_margin": ({}, _logits, lambda: torch.tensor([[0, 2, -1]] * 6), F.multilabel_margin_loss),
    "multilabel_soft_margin": ({"weight": [1.0, 2.0, 3.0]}, _logits, _binary,
                               lambda o, t: F.multilabel_soft_margin_loss(o, t, torch.tensor([1.0, 2.0, 3.0]))),
}


def test_every_loss_is_tried(plugins):
    assert set(LOSSES) == set(plugins.registry.names("loss"))


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_is_torchs_on_outputs_and_targets(name, plugins):
    params, outputs, targets, expected = LOSSES[name]
    context = BuildContext(plugins.registry, seed=0, device="cpu")
    loss = context.build("loss", {"name": name, **params})
    value = loss(outputs(), targets())
    assert value.dim() == 0 and math.isfinite(float(value))
    assert torch.allclose(value, expected(outputs(), targets()), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------ list-plugins and show at 80 columns


def cli_output(monkeypatch, *args: str, width: int = 80) -> str:
    """What `pipeforge *args` prints on a terminal `width` columns wide."""
    from pipeforge import cli

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, highlight=False, soft_wrap=True, color_system=None)
    monkeypatch.setattr(cli, "out", console)  # list-plugins and show print through cli.out only
    assert cli.main(list(args)) == 0
    return buffer.getvalue()


def test_list_plugins_shows_every_name_whole_at_80_columns(monkeypatch, plugins):
    text = cli_output(monkeypatch, "list-plugins")
    assert max(len(line) for line in text.splitlines()) <= 80
    words = {word.strip(",") for line in text.splitlines() for word in line.split()}
    for component in plugins.registry.all_components():
        assert component.name in words, f"{component.name} is cut or missing"


@pytest.mark.parametrize("kind", list(TORCH))
def test_show_fits_80_columns_for_the_whole_catalog(kind, monkeypatch, plugins):
    for name in TORCH[kind]:
        text = cli_output(monkeypatch, "show", name)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 80, name
        for field_name in plugins.registry.get(kind, name).params.model_fields:
            assert any(line.split()[:1] == [field_name] for line in lines), f"{name}: {field_name} is cut or missing"
    sgd = cli_output(monkeypatch, "show", "sgd")
    assert "lr            float = 0.01" in sgd and "foreach       bool (optional)" in sgd
    assert 'no_decay      list[string] = []' in sgd and "lr_groups     table of float = {}" in sgd


# ------------------------------------------------------------------------------ kill -9, then resume


def kill_recipe(name: str, tmp_path: Path) -> Path:
    """The kill test's recipes: tests/data/catalog.toml, and two other optimizer/scheduler pairs."""
    import tomli_w

    if name == "muon+cosine_warm_restarts":
        return CATALOG_RECIPE
    base = {key: value for key, value in POPULARITY.items() if key != "callbacks"}
    if name == "rmsprop+cyclic":
        recipe = {**base, "optimizer": {"name": "rmsprop", "lr": 0.005, "momentum": 0.5, "centered": True,
                                        "weight_decay": 0.01, "no_decay": ["bias"]},
                  "scheduler": {"name": "cyclic", "max_lr": 0.02, "step_size_up": 3, "mode": "triangular2",
                                "interval": "step"}}
    else:  # adagrad+reduce_on_plateau: its state (best, bad epochs) must survive the kill
        recipe = {**base, "optimizer": {"name": "adagrad", "lr": 0.5, "lr_groups": {"fc2": 0.1}},
                  "scheduler": {"name": "reduce_on_plateau", "monitor": "test_loss", "patience": 0, "factor": 0.5},
                  "trainer": {**base["trainer"], "epochs": 4}}
    recipe["trainer"] = {**recipe["trainer"], "checkpoint_every_steps": 2}
    path = tmp_path / f"{name}.toml"
    path.write_text("callbacks = []\n" + tomli_w.dumps(recipe))
    return path


@pytest.mark.slow  # trains through subprocesses
@pytest.mark.parametrize("name, kill", [
    ("muon+cosine_warm_restarts", {"KILL_AT_STEP": "7"}),
    ("rmsprop+cyclic", {"KILL_AT_STEP": "5"}),
    ("adagrad+reduce_on_plateau", {"KILL_AFTER_EPOCH": "2"}),
])
def test_sigkill_then_resume_is_bitwise_identical(name, kill, killer_env, tmp_path):
    from conftest import run_pipeforge

    recipe = kill_recipe(name, tmp_path)
    reference = run_pipeforge("run", recipe, "--run-dir", tmp_path / "reference", "--quiet", env=killer_env)
    assert reference.returncode == 0, reference.stderr
    killed = run_pipeforge("run", recipe, "--run-dir", tmp_path / "run", "--quiet", env={**killer_env, **kill})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "run" / "model.pt").exists()
    resumed = run_pipeforge("run", "--resume", tmp_path / "run", "--quiet", env=killer_env)
    assert resumed.returncode == 0, resumed.stderr
    mine = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    theirs = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert rows == (tmp_path / "reference" / "metrics.jsonl").read_text()
    if name.endswith("plateau"):  # the plateau reduced the lr at least once, so its state mattered
        lrs = [row["lr"] for row in map(json.loads, rows.splitlines())]
        assert len(set(lrs)) > 1, lrs


def test_the_readme_group_options_example_validates():
    import re
    import tomllib

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [example] = [block for block in blocks if "lr_groups" in block]
    table = tomllib.loads(example)["optimizer"]
    params = optim_params.AdamWParams.model_validate({k: v for k, v in table.items() if k != "name"})
    assert params.no_decay == ["bias", "norm"] and params.lr_groups == {"backbone": 1e-4, "head.fc": 0.01}


def test_a_loss_and_its_weights_are_on_the_runs_device(plugins):
    """Class weights are buffers of the loss module, moved where the outputs will be ("meta"
    stands in for a GPU here)."""
    context = BuildContext(plugins.registry, seed=0, device="meta")
    assert context.build("loss", {"name": "cross_entropy", "weight": [1.0, 2.0]}).weight.device.type == "meta"
    assert context.build("loss", {"name": "bce_with_logits", "pos_weight": [3.0]}).pos_weight.device.type == "meta"


def test_a_no_decay_pattern_that_matches_nothing_is_a_warning(tmp_path, caplog):
    run = {**POPULARITY, "optimizer": {"name": "adamw", "no_decay": ["bias", "norm"]}}
    pipeforge.run(run, run_dir=tmp_path / "run")
    assert "optimizer.no_decay: 'norm' matches no parameter of the model" in caplog.text
    assert "'bias'" not in caplog.text
