"""`pipeforge evaluate`, `predict` and `export`: commands that work on a finished run dir.

They rebuild the run from its `recipe.toml` (see `pipeforge.inference`, imported only when a
command runs, so that `--help` and the control plane stay free of torch) and print here.
`--json` output is stable:

- evaluate: `{"run_dir": …, "weights": …, "splits": [...], "metrics": {"<split>_loss": …}}`
- predict: a list with one `{"class": name, "index": i, "probabilities": {name: p}}` per
  sample, in input order; `index` is the class's index in the run's class list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from rich.table import Table
from rich.text import Text

from pipeforge.errors import EXIT_FAILURE, UsageError

CHECKPOINT_HELP = (
    "weights to use: the run's model.pt (default), 'last' (newest valid step checkpoint), "
    "'best' (checkpoints/best.pt), 'ema' (model_ema.pt, with trainer.ema_decay) or a checkpoint / "
    "state_dict file"
)


def add_commands(command: Callable[..., Any]) -> None:
    """Add the inference commands with the CLI's `command(name, func, help)` factory."""
    evaluate = command("evaluate", cmd_evaluate, "evaluate a run's model on its dataset's splits")
    _run_dir_arg(evaluate)
    evaluate.add_argument(
        "--split", dest="splits", action="append", metavar="SPLIT",
        help="split to evaluate (default: every split but train); repeatable",
    )
    evaluate.add_argument("--checkpoint", metavar="best|last|ema|PATH", help=CHECKPOINT_HELP)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("-o", "--output", type=Path, metavar="FILE",
                          help="also write the metrics as JSON to FILE (which must not exist)")

    predict = command("predict", cmd_predict, "classify inputs with a run's model")
    _run_dir_arg(predict)
    predict.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="what the run's dataset plugin reads: e.g. an image file, a CSV or JSON file, "
        "or a literal such as '[[7.5, 3.0]]'",
    )
    predict.add_argument("--checkpoint", metavar="best|last|ema|PATH", help=CHECKPOINT_HELP)
    predict.add_argument("--json", action="store_true", help="print class probabilities as JSON")

    export = command("export", cmd_export, "write a run's model as TorchScript or ONNX and check it")
    _run_dir_arg(export)
    export.add_argument("--format", required=True, choices=["torchscript", "onnx"],
                        help="torchscript (torch.jit) or onnx (needs pipeforge[onnx])")
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="file to write (default RUN_DIR/model.ts or RUN_DIR/model.onnx); must not exist")
    export.add_argument("--checkpoint", metavar="best|last|ema|PATH", help=CHECKPOINT_HELP)


def _run_dir_arg(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run dir written by `pipeforge run`")


# ------------------------------------------------------------------------------ commands


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeforge.cli_common import discover_plugins, err, out

    if args.output is not None and args.output.exists():
        raise UsageError(f"{args.output} already exists; nothing was evaluated. Choose another -o FILE.")
    from pipeforge.inference import evaluate_run  # torch is imported from here on

    result = evaluate_run(args.run_dir, discover_plugins(), choice=args.checkpoint, splits=args.splits)
    if result.skipped:
        err.print(Text(f"warning: the dataset skipped {len(result.skipped)} unreadable file(s)"))
    payload = {
        "run_dir": str(result.run_dir), "weights": str(result.weights),
        "splits": result.splits, "metrics": result.metrics,
    }
    if args.output is not None:
        try:
            with open(args.output, "x", encoding="utf-8") as f:
                f.write(json.dumps(payload, indent=2) + "\n")
        except FileExistsError:
            raise UsageError(f"{args.output} already exists; it was not overwritten") from None
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        out.print(Text(f"{result.run_dir} ({result.weights.name})"))
        out.print(_metrics_table(result.splits, result.metrics))
    if args.output is not None:
        err.print(Text(f"wrote {args.output}"))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeforge.cli_common import discover_plugins, out
    from pipeforge.inference import predict  # torch is imported from here on

    predictions = predict(args.run_dir, discover_plugins(), args.inputs, choice=args.checkpoint)
    if args.json:
        sys.stdout.write(json.dumps([p.to_json() for p in predictions], indent=2) + "\n")
        return 0
    for prediction in predictions:
        out.print(Text(prediction.name))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipeforge.cli_common import discover_plugins, err, out
    from pipeforge.export import export  # torch is imported from here on

    result = export(args.run_dir, discover_plugins(), args.format, output=args.output, choice=args.checkpoint)
    out.print(Text(f"wrote {result.path} ({result.format}, weights from {result.weights})"))
    if result.skipped is not None:
        out.print(Text(f"check skipped: {result.skipped}"))
        return 0
    numbers = f"max abs difference {result.max_abs_diff:.2e}, tolerance {result.tolerance:.2e}"
    if not result.matches:
        err.print(Text("error: ", style="bold red") + Text(
            f"the re-loaded {result.format} model's outputs differ from the eager model's on the "
            f"example input ({numbers}); {result.path} is kept for inspection"
        ))
        return EXIT_FAILURE
    out.print(Text(f"check passed: re-loaded outputs match the eager model on the example input ({numbers})"))
    return 0


def _metrics_table(splits: list[str], metrics: dict[str, float]) -> Table:
    """One row per split, one column per metric (`test_accuracy` → split test, accuracy)."""
    cells: dict[str, dict[str, float]] = {split: {} for split in splits}
    for key, value in metrics.items():
        # The longest split that prefixes the key owns it ("val_hard_loss" is val_hard's).
        owners = [s for s in splits if key.startswith(f"{s}_")]
        if owners:
            split = max(owners, key=len)
            cells[split][key[len(split) + 1 :]] = value
    names = list(dict.fromkeys(name for row in cells.values() for name in row))
    table = Table()
    table.add_column("split")
    for name in names:
        table.add_column(Text(name), justify="right")
    for split in splits:
        values = [cells[split].get(name) for name in names]
        table.add_row(Text(split), *(f"{v:.4f}" if isinstance(v, float) else "" for v in values))
    return table
