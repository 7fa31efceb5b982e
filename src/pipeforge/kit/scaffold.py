"""`pipeforge new-plugin`: write a complete, working plugin from the templates in `template/`.

The plugin it writes is the smallest one that shows every part of the contract: a torch-free
registration module with lazy builders, a dataset with an input reader, a model, a metric, a
callback, a recipe, a README and tests using pipeforge's pytest fixtures. The templates are
package data (`*.tmpl`, so that neither Python nor pytest mistakes them for code) filled in
with `string.Template`: `$name`, `$package`, `$dist`, `$requires`. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import re
from importlib import resources
from pathlib import Path
from string import Template

from pipeforge.errors import UsageError
from pipeforge.version import __version__

# A plugin's name is its entry-point name, the namespace of its components (`acme.stripes`)
# and part of its package name (`pipeforge_acme`), so it must suit all three.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Names a new plugin may not take: the built-in plugin's entry point.
RESERVED = ("builtin",)

# template file → where it goes in the plugin, relative to its folder
FILES: dict[str, str] = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "plugin.py.tmpl": "src/{package}/plugin.py",
    "build.py.tmpl": "src/{package}/build.py",
    "predict.py.tmpl": "src/{package}/predict.py",
    "recipe.toml.tmpl": "recipes/{name}.toml",
    "vertical.json.tmpl": "examples/vertical.json",
    "test_plugin.py.tmpl": "tests/test_{name}.py",
}


def supported_versions(version: str = __version__) -> str:
    """The requirement a new plugin declares: this pipeforge's minor series (`pipeforge>=0.1,<0.2`).

    Before 1.0 the plugin contract may change between minor versions, so a plugin written now
    promises nothing for the next one."""
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    return f"pipeforge>={major}.{minor},<{major}.{minor + 1}"


def check_name(name: str) -> None:
    """Refuse a plugin name that cannot be an entry-point name, namespace and package suffix."""
    if not NAME.match(name):
        raise UsageError(
            f"'{name}' cannot name a plugin: use lowercase letters, digits and _, starting with a "
            "letter, at most 40 characters (e.g. 'shapes' or 'my_data')"
        )
    if name in RESERVED:
        raise UsageError(f"'{name}' is the name of pipeforge's built-in plugin; choose another")


def render(name: str) -> dict[str, str]:
    """Every file of a new plugin `name`: relative path → content. Writes nothing."""
    check_name(name)
    values = {"name": name, "package": f"pipeforge_{name}", "dist": f"pipeforge-{name}",
              "requires": supported_versions()}
    folder = resources.files("pipeforge.kit") / "template"
    rendered = {}
    for template, target in FILES.items():
        text = folder.joinpath(template).read_text(encoding="utf-8")
        rendered[target.format(**values)] = Template(text).substitute(values)
    return rendered


def new_plugin(name: str, directory: Path | None = None) -> Path:
    """Write the plugin `pipeforge-NAME` into `directory` (default `./pipeforge-NAME`) and
    return that folder; `render(name)`'s keys are the files it holds.

    Raises `UsageError`, having written nothing, for a name that is not lowercase letters,
    digits and `_`, or a directory that exists and is not empty (or is not a directory).
    """
    files = render(name)
    directory = Path(directory) if directory is not None else Path(f"pipeforge-{name}")
    if directory.exists() or directory.is_symlink():
        if not directory.is_dir():
            raise UsageError(f"{directory} exists and is not a directory; nothing was written")
        if any(directory.iterdir()):
            raise UsageError(f"{directory} is not empty; nothing was written. Choose a new or empty --dir.")
    existed = directory.is_dir()
    try:
        for relative, content in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:  # "x": never replace what is there
                f.write(content)
    except OSError as exc:
        _remove_written(directory, existed, files)
        raise UsageError(f"cannot write the plugin into {directory}: {exc.strerror or exc}") from None
    return directory


def _remove_written(directory: Path, existed: bool, files: dict[str, str]) -> None:
    """Undo a half-written plugin: the files `new_plugin` wrote and the folders it made, so a
    failure leaves `directory` as it was (absent, or empty)."""
    for relative in files:
        (directory / relative).unlink(missing_ok=True)
    folders = {parent for relative in files for parent in (directory / relative).parents if directory in parent.parents}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: never what someone else put there
    if not existed:
        with contextlib.suppress(OSError):
            directory.rmdir()
