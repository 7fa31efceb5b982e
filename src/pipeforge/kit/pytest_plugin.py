"""pytest fixtures for testing a pipeforge plugin, loaded in every pytest session of an
environment where pipeforge is installed (the `pytest11` entry point `pipeforge`).

- `pipeforge_run(recipe, overrides=())`: train a recipe (a TOML path or a dict shaped like one)
  with the installed plugins, into a run dir under the test's `tmp_path`, with torch on one
  thread; returns the `pipeforge.Result` (`result.metrics`, `result.history`, `result.run_dir`).
- `tiny_context`: a `pipeforge.BuildContext` on the CPU, seed 0, with a run dir under
  `tmp_path` and every installed plugin's components.
- `build_component(kind, name, **params)`: build one registered component on `tiny_context`
  and check it as a run would (a dataset returns `Datasets`, a model a `torch.nn.Module`, a
  metric and a callback keep their contract, `PluginError` otherwise). What it builds is kept
  in the context like the engine keeps it, so a model built after a dataset is sized to it.

Importing this module imports neither torch nor the plugins: each fixture does, when used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import pytest

if TYPE_CHECKING:
    from pipeforge import BuildContext, Result
    from pipeforge.plugins import Plugins


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one thread (test machines are shared), then restore it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pipeforge_plugins() -> Plugins:
    """The installed plugins, discovered once per session (a plugin installed later in the
    session is not in it)."""
    from pipeforge.plugins import discover

    return discover()


@pytest.fixture
def tiny_context(tmp_path: Path, pipeforge_plugins: Plugins) -> BuildContext:
    """A `BuildContext` on the CPU with seed 0 and an empty run dir under `tmp_path`."""
    from pipeforge.context import BuildContext

    run_dir = tmp_path / "pipeforge-run"
    run_dir.mkdir(exist_ok=True)
    return BuildContext(registry=pipeforge_plugins.registry, seed=0, device="cpu", run_dir=run_dir)


@pytest.fixture
def build_component(tiny_context: BuildContext) -> Callable[..., Any]:
    """`build_component(kind, name, **params)`: build a registered component on `tiny_context`
    and check it as a run would (`PluginError` naming it otherwise). A dataset, model or
    optimizer it builds is kept in the context, as the engine keeps them, so that a model
    built after a dataset is sized to it."""
    from pipeforge.kit.probe import built_problems
    from pipeforge.registry import KINDS

    def build(kind: str, name: str, **params: Any) -> Any:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        with one_torch_thread():
            value = tiny_context.build(kind, {"name": name, **params})
        label = f"{kind} '{name}'"
        problems = built_problems(kind, value, label)
        if problems:
            from pipeforge.errors import PluginError

            raise PluginError(f"{label}: " + "; ".join(problems))
        if kind == "dataset":
            tiny_context.datasets = value
        elif kind == "model":
            tiny_context.model = value
        elif kind == "optimizer":
            tiny_context.optimizer = value
        return value

    return build


@pytest.fixture
def pipeforge_run(tmp_path: Path) -> Callable[..., Result]:
    """`pipeforge_run(recipe, overrides=(), **kwargs)`: `pipeforge.run` into a new run dir
    under `tmp_path`, on one torch thread. The working directory is left as it is, so paths in
    the recipe mean what they mean on the command line; `kwargs` go to `pipeforge.run`
    (e.g. `callbacks=[...]`)."""
    numbers = itertools.count(1)

    def run(recipe: str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str] = (), **kwargs: Any) -> Result:
        import pipeforge

        run_dir = tmp_path / "runs" / f"run-{next(numbers)}"
        source = Path(recipe) if isinstance(recipe, (str, os.PathLike)) else recipe
        with one_torch_thread():
            return pipeforge.run(source, overrides=list(overrides), run_dir=run_dir, **kwargs)

    return run
