"""The `pipeforge` command. It owns the console: everything a user reads is printed here.

Exit codes: 0 ok; 1 failure at run time; 2 usage, recipe or plugin error; 130 on Ctrl-C.
The control plane (help, validate, list-plugins, show, schema) never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeforge import __version__
from pipeforge.errors import EXIT_FAILURE, EXIT_INTERRUPTED, PipeforgeError, UsageError
from pipeforge.plugins import Plugins, discover
from pipeforge.recipe import Recipe, load_recipe, resolved
from pipeforge.registry import KINDS

# Recipe values that may differ when a run is resumed: they change how long or where it runs,
# not what it computes.
RESUMABLE_CHANGES = (
    "trainer.epochs", "trainer.num_workers", "trainer.keep_checkpoints",
    "trainer.checkpoint_every_steps", "trainer.device",
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code."""
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


def cmd_run(args: argparse.Namespace) -> int:
    from pipeforge.distributed import Dist
    from pipeforge.rundir import RunDir

    plugins = _discover()
    if args.resume is None and args.recipe is None:
        raise UsageError("run needs a RECIPE (or --resume RUN_DIR)")
    recipe = load_recipe(args.recipe or args.resume / "recipe.toml", plugins.registry, args.overrides)
    if args.nproc_per_node:
        return _launch(args, recipe)
    dist = Dist.from_env()
    if dist.enabled and recipe.trainer.strategy == "none":
        raise UsageError('trainer.strategy is "none" but this was launched with several processes')
    if not dist.enabled and recipe.trainer.strategy == "ddp":
        raise UsageError('trainer.strategy is "ddp": launch with --nproc-per-node N (or torchrun)')
    _start_process_group(dist, recipe)
    clean = False
    try:
        if args.resume is not None:
            code = _resume(args, plugins, dist)
            clean = True
            return code
        # Rank 0 claims the run dir and tells the others where it is (or that it failed).
        run_dir, failure = None, None
        if dist.is_main:
            try:
                run_dir = RunDir.claim(args.run_dir, recipe.run.name)
            except UsageError as exc:
                failure = str(exc)
        shared = dist.share((str(run_dir.path) if run_dir else None, failure))
        if shared[1] is not None:
            raise UsageError(shared[1])
        run_dir = run_dir or RunDir(Path(shared[0]))
        if not dist.is_main:
            code = _fit(args, recipe, plugins, run_dir, None, dist)
            clean = True
            return code
        try:
            with run_dir.lock():
                run_dir.write_recipe(resolved(recipe, plugins.registry), _recipe_header(args, run_dir.path))
                run_dir.write_env(_environment(recipe, plugins, dist))
                code = _fit(args, recipe, plugins, run_dir, None, dist)
                clean = True
                return code
        except BaseException:
            if run_dir.discard_if_untrained():
                _warn(f"nothing was trained, so the run dir {run_dir.path} was removed")
            raise
    finally:
        dist.stop(clean)


def _start_process_group(dist: Any, recipe: Recipe) -> None:
    if dist.enabled:
        import torch

        cuda = recipe.trainer.device != "cpu" and torch.cuda.is_available()
        dist.start("cuda" if cuda else "cpu", recipe.trainer.dist_timeout_s)


def _launch(args: argparse.Namespace, recipe: Recipe) -> int:
    """`run --nproc-per-node N`: the same command under torch's launcher, run dir fixed first."""
    from pipeforge.distributed import launch
    from pipeforge.rundir import default_path

    argv = ["run"]
    if args.resume is not None:
        argv += ["--resume", str(args.resume)]
    if args.recipe is not None:
        argv.append(str(args.recipe))
    if args.resume is None:
        argv += ["--run-dir", str(args.run_dir or default_path(recipe.run.name))]
    for override in args.overrides:
        argv += ["--set", override]
    if args.quiet:
        argv.append("--quiet")
    return launch(args.nproc_per_node, argv)


def _resume(args: argparse.Namespace, plugins: Plugins, dist: Any) -> int:
    from pipeforge import checkpoint
    from pipeforge.rundir import RunDir

    run_dir = RunDir(args.resume)
    saved_path = args.resume / "recipe.toml"
    if not saved_path.is_file():
        raise UsageError(f"{args.resume} is not a pipeforge run dir (no recipe.toml)")
    saved = resolved(load_recipe(saved_path, plugins.registry), plugins.registry)
    recipe = load_recipe(args.recipe or saved_path, plugins.registry, args.overrides)
    wanted = resolved(recipe, plugins.registry)
    changes = _differences(saved, wanted)
    refused = [c for c in changes if c[0] not in RESUMABLE_CHANGES]
    if refused:
        lines = "\n".join(f"  {key}: {old!r} -> {new!r}" for key, old, new in refused)
        raise UsageError(
            f"cannot resume {args.resume} with a different recipe:\n{lines}\n"
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume; start a new run instead"
        )
    # Rank 0 picks the checkpoint; every rank loads the same file.
    found = checkpoint.latest_valid(args.resume / "checkpoints") if dist.is_main else None
    path = dist.share(str(found[0]) if found else None)
    payload = found[1] if found else (checkpoint.load(Path(path)) if path else None)
    if not dist.is_main:
        return _fit(args, recipe, plugins, run_dir, payload, dist)
    with run_dir.lock():
        if changes:
            run_dir.rewrite_recipe(wanted, _recipe_header(args, run_dir.path))
        run_dir.rewrite_metrics(payload["history"] if payload else [])
        if args.quiet:
            pass
        elif payload is None:
            err.print(Text(f"{args.resume} has no checkpoint yet: starting it from the beginning"))
        else:
            err.print(Text(f"resuming {args.resume} from {Path(path).name} "
                           f"(epoch {payload['epochs_done']}, step {payload['global_step']})"))
        return _fit(args, recipe, plugins, run_dir, payload, dist)


def _fit(args: argparse.Namespace, recipe: Recipe, plugins: Plugins, run_dir: Any, resume: Any, dist: Any) -> int:
    from pipeforge.console import ConsoleReporter
    from pipeforge.engine import StopRequest, fit  # torch is imported from here on

    # Other ranks of a data-parallel job stay silent unless they fail.
    loud = dist.is_main and not args.quiet
    reporter = ConsoleReporter(err, progress=err.is_terminal and loud, lines=loud)
    stop = StopRequest()
    with _signals_request(stop):
        state = fit(recipe, plugins, run_dir, extra=[reporter] if dist.is_main else [],
                    stop=stop, resume=resume, dist=dist)
    if dist.is_main:
        if loud and state.history:
            out.print(Text(f"done: {_summary(state.history[-1])}"))
        out.print(Text(f"run dir: {run_dir.path}"))
    return 0


@contextlib.contextmanager
def _signals_request(stop: Any) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second one exits at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop.signal is not None:
            os._exit(128 + signum)
        stop.signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every value that differs between two recipes."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{path}.")
        elif a != b:
            found.append((path, a, b))
    return found


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


def _recipe_header(args: argparse.Namespace, run_dir: Path) -> str:
    sets = "".join(f" --set {o}" for o in args.overrides)
    return (
        f"Resolved by pipeforge {__version__} from {args.recipe}{sets}, defaults filled in.\n"
        f"Run it again with: pipeforge run {run_dir / 'recipe.toml'}"
    )


def _environment(recipe: Recipe, plugins: Plugins, dist: Any) -> dict[str, Any]:
    import torch

    return {
        "world_size": dist.world,
        "pipeforge": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "seed": recipe.run.seed,
        "command": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status}
            for p in plugins.registry.plugins
        ],
    }
