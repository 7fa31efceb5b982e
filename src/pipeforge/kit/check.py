"""`pipeforge check-plugin`: try an installed plugin against the contract, the way runs will use
it, and list every problem, each naming its component.

What is checked, in order:

1. The plugin loads (discovery's own checks: imports, hook names of its module, namespaced
   component names) and its distribution's pipeforge requirement admits this pipeforge.
2. Importing its registration module, and calling `register_components`, imports no torch
   (in a fresh interpreter, which reports the import chain that pulled torch in).
3. Every lazy builder and input reader ("module:function") can be imported.
4. Each component is built on a small CPU `BuildContext` (seed 0, a scratch run dir) and
   checked as a run would use it: a dataset returns `Datasets` whose first 'train' batch is
   (input, target) pairs; a model trains one step on its dataset's first batch of 4 and gives
   one output per class; a metric and a callback keep their contract (`check_metric`,
   `check_callback`, hook names, `state_dict` round trip); a metric and a loss are tried on a
   model's outputs; an optimizer takes a step; a scheduler steps.

Params: a component is built with the params of the first recipe shipped with the plugin that
names it (so a model is paired with that recipe's dataset and params), else with its defaults.
A component with required params that no shipped recipe names is not built: that is a note,
not a problem. Shipped recipes are `recipes/*.toml` in the plugin's source folder (the path
given, or the folder pip installed it from, as pip records it) and in its package.

Nothing here imports torch at module level; `components` and `probe`, imported when a check
runs, do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeforge.errors import PipeforgeError, RecipeError, UsageError
from pipeforge.plugins import Plugins, discover
from pipeforge.recipe import Recipe, did_you_mean, load_recipe, read_toml
from pipeforge.kit.report import CheckReport, Finding
from pipeforge.kit.scaffold import supported_versions
from pipeforge.registry import PluginInfo
from pipeforge.version import __version__


def check_plugin(target: str | Path, plugins: Plugins | None = None) -> CheckReport:
    """Check the installed plugin `target` names: an entry-point name (`acme`) or the path of
    a plugin's source folder (or its pyproject.toml), whose entry-point name is read from it.

    Raises `UsageError` when `target` is neither an installed plugin nor a plugin's folder, or
    names a folder whose plugin is not installed. Every problem of the plugin is in the report.
    """
    plugins = plugins or discover()
    info, source = find_plugin(str(target), plugins)
    report = CheckReport(info, source)
    plugin = ("plugin", info.name)
    if info.status != "ok":
        report.problems.append(Finding(*plugin, f"{info.distribution} {info.version} is {info.status}: {info.error}"))
        return report
    for finding in requirement_findings(info):
        (report.notes if finding[0] == "note" else report.problems).append(Finding(*plugin, finding[1]))
    torch_problem = torch_at_registration(info.module.partition(":")[0])
    if torch_problem is not None:
        report.problems.append(Finding(*plugin, torch_problem))
    else:
        report.passed.append(Finding(*plugin, f"importing {info.module} and registering imports no torch"))
    recipes = shipped_recipes(source, info, plugins, report)
    from pipeforge.kit.components import ComponentCheck  # torch is imported from here on

    with tempfile.TemporaryDirectory(prefix="pipeforge-check-") as scratch:
        ComponentCheck(plugins.registry, info.components, recipes, report, Path(scratch)).run()
    return report


# ------------------------------------------------------------------------------ the target


def find_plugin(target: str, plugins: Plugins) -> tuple[PluginInfo, Path | None]:
    """The installed plugin `target` names, and its source folder when known."""
    by_name = {p.name: p for p in plugins.registry.plugins}
    path = Path(target)
    if target not in by_name and (path.exists() or "/" in target or target.endswith(".toml")):
        name = entry_point_name(path)
        if name not in by_name:
            raise UsageError(f"the plugin '{name}' of {path} is not installed; install it first: pip install -e {path}")
        return by_name[name], (path if path.is_dir() else path.parent).resolve()
    if target not in by_name:
        hint = did_you_mean(target, sorted(by_name))
        raise UsageError(f"no installed plugin is named '{target}'" + (f"; {hint}" if hint else "")
                         + f" (installed: {', '.join(sorted(by_name)) or 'none'}); or give a plugin's folder")
    info = by_name[target]
    return info, installed_from(info.distribution)


def entry_point_name(path: Path) -> str:
    """The one `[project.entry-points.pipeforge]` name declared in a plugin's pyproject.toml."""
    pyproject = path / "pyproject.toml" if path.is_dir() else path
    if not pyproject.is_file():
        raise UsageError(f"{path}: no such plugin folder (a folder with a pyproject.toml) and no installed plugin of that name")
    try:
        data = read_toml(pyproject)
    except RecipeError as exc:
        raise UsageError(f"{pyproject}: cannot be read as TOML: {exc}") from None
    project = data.get("project") if isinstance(data.get("project"), dict) else {}
    points = project.get("entry-points", {}) if isinstance(project.get("entry-points"), dict) else {}
    names = list(points.get("pipeforge", {}) if isinstance(points.get("pipeforge"), dict) else {})
    if len(names) != 1:
        found = f"declares {', '.join(names)}" if names else "declares none"
        raise UsageError(f"{pyproject}: a plugin declares one entry point in [project.entry-points.pipeforge]; "
                         f"it {found}" + ("; check them by name" if names else ""))
    return names[0]


def installed_from(distribution: str) -> Path | None:
    """The local folder pip installed `distribution` from (PEP 610 direct_url.json), if any."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
        url = json.loads(text or "{}").get("url", "")
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        return None
    parsed = urlparse(url)
    folder = Path(unquote(parsed.path)) if parsed.scheme == "file" else None
    return folder if folder is not None and folder.is_dir() else None


def requirement_findings(info: PluginInfo) -> list[tuple[str, str]]:
    """("problem" | "note", message) about the pipeforge versions the distribution supports."""
    if info.distribution == "pipeforge":
        return []
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.utils import canonicalize_name

        requires = metadata.distribution(info.distribution).requires or []
    except (ImportError, metadata.PackageNotFoundError):
        return [("note", "its pipeforge requirement was not checked (the `packaging` module is missing)")]
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != "pipeforge" or (
                requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        if requirement.specifier and not requirement.specifier.contains(__version__, prereleases=True):
            return [("problem", f"{info.distribution} requires {requirement}, but pipeforge {__version__} is installed")]
        return [] if requirement.specifier else [
            ("note", "it requires pipeforge without a version range; declare the versions it supports, "
                     f"e.g. \"{supported_versions()}\"")]
    return [("note", "its distribution does not declare pipeforge in its dependencies; add the versions "
                     f"it supports, e.g. \"{supported_versions()}\"")]


# ------------------------------------------------------------------------------ torch-free registration

# Run in a fresh interpreter: import the registration module, call its register_components,
# and if torch gets imported, say from where (the frames of the import statement's chain).
_PROBE = r"""
import importlib, json, sys, traceback

class Watch:
    chain = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and Watch.chain is None:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if not f.filename.startswith("<") and "importlib" not in f.filename]
            Watch.chain = [f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in frames]
        return None

sys.meta_path.insert(0, Watch())
try:
    module = importlib.import_module(sys.argv[1])
    hook = getattr(module, "register_components", None)
    if callable(hook):
        hook()
except BaseException as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
else:
    print(json.dumps({"torch": "torch" in sys.modules, "chain": Watch.chain}))
"""


def torch_at_registration(module: str) -> str | None:
    """A problem message when importing `module` (and registering) imports torch, else None."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return f"importing {module} in a fresh interpreter did not finish or printed something unexpected"
    if "error" in result:
        return f"importing {module} in a fresh interpreter failed: {result['error']}"
    if not result["torch"]:
        return None
    chain = " -> ".join(result.get("chain") or []) or "unknown"
    return (f"its registration module {module} imports torch (via {chain}); pipeforge imports it for "
            "every command, so keep torch out: name builders as \"module:function\" strings, or import "
            "torch inside them")


# ------------------------------------------------------------------------------ shipped recipes


def shipped_recipes(source: Path | None, info: PluginInfo, plugins: Plugins, report: CheckReport) -> list[Recipe]:
    """The recipes shipped with the plugin, validated (a recipe that does not validate is noted
    and not used): `recipes/*.toml` in its source folder and in its package."""
    folders = [source / "recipes"] if source is not None else []
    package = info.module.partition(":")[0].split(".")[0]
    try:
        from importlib import resources

        folders.append(Path(str(resources.files(package) / "recipes")))
    except (ModuleNotFoundError, TypeError):
        pass
    recipes = []
    for path in sorted({p.resolve() for folder in folders if folder.is_dir() for p in folder.glob("*.toml")}):
        try:
            recipes.append(load_recipe(path, plugins.registry))
        except PipeforgeError as exc:
            first = str(exc).splitlines()[1:2] or [str(exc)]
            report.notes.append(Finding("plugin", info.name, f"recipe {path.name} is not used: {first[0].strip(' -')}"))
    return recipes
