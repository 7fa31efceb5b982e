"""The `pipeforge` command. It owns the console: everything a user reads is printed here.

Exit codes: 0 ok; 1 failure at run time; 2 usage, recipe or plugin error; 130 on Ctrl-C.
The control plane (help, validate, list-plugins, show, schema) never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeforge import __version__
from pipeforge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, PipeforgeError, UsageError
from pipeforge.plugins import Plugins, discover
from pipeforge.recipe import load_recipe
from pipeforge.registry import KINDS

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "torch.distributed" in sys.modules:
        # A rank of a torchrun job: the process group is gone and every file is written, but
        # torch's communication threads can still abort the interpreter's own teardown
        # ("terminate called without an active exception"), so leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    try:
        return args.command(args)
    except PipeforgeError as exc:
        # Under torchrun every rank sees the same bad input; rank 0 says it once.
        if rank == 0 or exc.exit_code != 2:
            _error(str(exc) if rank == 0 else f"[rank {rank}] {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # an unexpected failure: one line, the traceback behind --debug
        if args.debug:
            raise
        where = f"[rank {rank}] " if rank else ""
        _error(f"{where}{type(exc).__name__}: {exc}\n(run again with --debug for the traceback)")
        return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeforge", description="Declarative, plugin-based training for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"pipeforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=func)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    def recipe_args(sub: argparse.ArgumentParser, optional: bool = False) -> None:
        sub.add_argument("recipe", type=Path, help="recipe TOML file", nargs="?" if optional else None)
        sub.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a recipe value, e.g. --set optimizer.lr=0.1 (VALUE is read as TOML, "
            "else as a string); repeatable",
        )

    from pipeforge.cli_run import RESUMABLE_CHANGES, cmd_run

    run = command("run", cmd_run, "train a model as a recipe describes")
    recipe_args(run, optional=True)
    run.add_argument("--run-dir", type=Path, help="output directory (default runs/<name>-<timestamp>); must be new or empty")
    run.add_argument(
        "--nproc-per-node", type=int, metavar="N",
        help="train data-parallel with N processes, launched by torch's elastic launcher (torchrun)",
    )
    run.add_argument(
        "--resume", type=Path, metavar="RUN_DIR",
        help="continue RUN_DIR from its latest valid checkpoint (RECIPE defaults to RUN_DIR/recipe.toml; "
        f"only {', '.join(RESUMABLE_CHANGES)} may change)",
    )
    run.add_argument("--quiet", action="store_true", help="print only the run dir and errors")

    validate = command("validate", cmd_validate, "check a recipe without building anything")
    recipe_args(validate)

    plugins = command("list-plugins", cmd_list_plugins, "list installed plugins and their components")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    show = command("show", cmd_show, "show a component's parameters")
    show.add_argument("name", help="component name, e.g. sgd or popularity.simplenet")

    schema = command("schema", cmd_schema, "print the JSON Schema of recipes (draft 2020-12)")
    schema.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")

    from pipeforge.cli_inference import add_commands

    add_commands(command)
    return parser


# ------------------------------------------------------------------------------ commands


def cmd_validate(args: argparse.Namespace) -> int:
    plugins = _discover()
    recipe = load_recipe(args.recipe, plugins.registry, args.overrides)
    names = ", ".join(f"{kind} {spec.name}" for _, kind, spec in recipe.component_specs())
    out.print(Text(f"{args.recipe}: ok ({names})"))
    return 0


def cmd_list_plugins(args: argparse.Namespace) -> int:
    plugins = _discover(warn=not args.json)
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "module": p.module,
            "status": p.status,
            "error": p.error,
            "components": p.components_by_kind(),
        }
        for p in plugins.registry.plugins
    ]
    if args.json:
        out.print_json(json.dumps({"plugins": rows}))
        return 0
    table = Table(title="pipeforge plugins")
    for column in ("plugin", "distribution", "version", "status", "components"):
        table.add_column(column)
    for row in rows:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in row["components"].items()]
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['error']}"
        table.add_row(row["name"], row["distribution"], row["version"], Text(status), Text("\n".join(parts)))
    out.print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    registry = _discover().registry
    found = [c for c in (registry.find(kind, args.name) for kind in KINDS) if c is not None]
    if not found:
        every = sorted({c.name for c in registry.all_components()})
        from pipeforge.recipe import _did_you_mean

        hint = _did_you_mean(args.name, every)
        raise UsageError(f"no component named '{args.name}'" + (f"; {hint}" if hint else ""))
    for comp in found:
        owner = registry.owner(comp.kind, comp.name)
        table = Table(title=f"{comp.kind} {comp.name} — {comp.description}", caption=f"from {owner.distribution} {owner.version}" if owner else None)
        for column in ("param", "type", "default", "description"):
            table.add_column(column)
        for name, field in comp.params.model_fields.items():
            default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
            table.add_row(name, _type_name(field.annotation), default, field.description or "")
        out.print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from pipeforge.schema import recipe_schema

    text = json.dumps(recipe_schema(_discover().registry), indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
        out.print(Text(f"wrote {args.output}"))
    else:
        sys.stdout.write(text + "\n")
    return 0


# ------------------------------------------------------------------------------ helpers


def _discover(warn: bool = True) -> Plugins:
    plugins = discover()
    if warn:
        for plugin in plugins.broken:
            _warn(f"plugin '{plugin.name}' from {plugin.distribution} {plugin.version} is {plugin.status}: {plugin.error}")
    return plugins


def _error(message: str) -> None:
    err.print(Text("error: ", style="bold red") + Text(message))


def _warn(message: str) -> None:
    err.print(Text("warning: ", style="bold yellow") + Text(message))


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _summary(row: dict[str, Any]) -> str:
    from pipeforge.console import format_metrics

    return f"epoch {row['epoch']}  {format_metrics(row)}"
