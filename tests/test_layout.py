"""The shape of the code: no import cycles, and one owner for the checkpoint's keys."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def import_graph(root: Path) -> dict[str, set[str]]:
    """module → the modules of the same packages it imports, from the AST (every import,
    also inside functions and under TYPE_CHECKING; nothing is executed)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` imports the submodule when there is one.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_roots() -> list[Path]:
    return [SRC] + sorted(p / "src" for p in PLUGINS.iterdir() if (p / "src").is_dir())


@pytest.mark.parametrize("root", package_roots(), ids=lambda p: p.parent.name)
def test_no_import_cycles(root):
    assert cycles(import_graph(root)) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (tmp_path / "pkg" / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(tmp_path)) == [["pkg.a", "pkg.b"]]


def test_the_checkpoint_keys_are_written_and_read_in_one_module():
    """Only checkpoint.py spells the payload's keys; everyone else uses `Checkpoint`."""
    keys = ("epochs_done", "global_step", "example_input", "format_version")
    owners = set()
    for path in (SRC / "pipeforge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in keys:
                owners.add(path.name)
    assert owners == {"checkpoint.py"}


# The flow, lowest layer first: a module may import its own layer or a lower one, never a
# higher one (recipe → build → engine → run records → inference/export, the CLI on top). The
# built-in plugin sits beside the contract: like any plugin it may import only that.
LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "version", "atomic", "distributed", "loaders"], 0),  # foundations
    **dict.fromkeys(["registry", "sections", "sweep_table", "recipe", "recipe_file", "compose", "recipe_lines", "context", "contract", "hookspecs", "plugins", "schema"], 1),  # contract
    **dict.fromkeys(["checkpoint", "rundir", "saver"], 2),  # run records
    **dict.fromkeys(["setup", "step", "build", "evaluation", "engine"], 3),  # the loop and what it runs
    **dict.fromkeys(["runs"], 2),  # reading run dirs back (runs, compare)
    **dict.fromkeys(["inference", "export", "plot"], 4),  # using a finished run
    **dict.fromkeys(["api", "sweep", "sweep_optuna", "sweep_worker"], 5),  # sweeps run through the API
    **dict.fromkeys(["console", "cli_common", "cli_run", "cli_sweep", "cli_runs", "cli_inference", "cli", "__main__", ""], 6),
    # The plugin author's kit and its commands: beside the CLI, on top of api/plugins/contract.
    **dict.fromkeys(["cli_kit", "kit", "kit.scaffold", "kit.check", "kit.report", "kit.components",
                     "kit.probe", "kit.pytest_plugin"], 6),
}
PLUGIN_CONTRACT = {"errors", "registry", "context", "contract", "hookspecs", "version"}


def layer_of(module: str) -> int | None:
    short = module.removeprefix("pipeforge").removeprefix(".")
    return None if short.startswith("builtin") else LAYERS[short]


def test_every_module_is_placed_in_a_layer():
    for module in import_graph(SRC):
        short = module.removeprefix("pipeforge").removeprefix(".")
        assert short.startswith("builtin") or short in LAYERS, f"{module}: add it to LAYERS"


def test_no_module_imports_against_the_flow():
    graph = import_graph(SRC)
    upward = []
    for module, imported in graph.items():
        mine = layer_of(module)
        for target in imported:
            theirs = layer_of(target)
            if mine is None:  # the built-in plugin: the public contract and itself only
                short = target.removeprefix("pipeforge.")
                if not (short.startswith("builtin") or short in PLUGIN_CONTRACT):
                    upward.append(f"{module} -> {target} (a plugin may import only the contract)")
            elif theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
    assert upward == []


def test_every_module_says_what_it_owns():
    for path in (SRC / "pipeforge").rglob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring) > 20, f"{path.relative_to(SRC)} has no module docstring"
