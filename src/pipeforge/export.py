"""`pipeforge export`: write a run's model as TorchScript or ONNX and prove the file computes
what the eager model computes (re-loaded, compared on a training sample stored in the checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from pipeforge.errors import CheckpointError, PipeforgeError, UsageError
from pipeforge.inference import load_run, tensor_output
from pipeforge.plugins import Plugins

EXPORT_FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
ONNX_INSTALL = "pip install 'pipeforge[onnx]'"


@dataclass
class Export:
    """What `export` wrote and how the re-loaded file compared with the eager model.

    `max_abs_diff` is None when the check was skipped (`skipped` says why).
    """

    path: Path
    format: str
    weights: Path
    max_abs_diff: float | None
    tolerance: float
    skipped: str | None = None

    @property
    def matches(self) -> bool:
        return self.max_abs_diff is None or self.max_abs_diff <= self.tolerance




def export(run_dir: Path, plugins: Plugins, fmt: str, *, output: Path | None = None,
           choice: str | None = None) -> Export:
    """Write the model as TorchScript or ONNX, re-load the file and compare with the eager model.

    The default file is RUN_DIR/model.ts or RUN_DIR/model.onnx; an existing file is never
    overwritten (`UsageError`). The comparison uses the checkpoint's `example_input` (one
    training sample) as a batch of 1 and of 2. ONNX needs `onnx` and `onnxscript`; without
    `onnxruntime` the file is written and the check skipped.
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format '{fmt}'; expected one of {', '.join(EXPORT_FORMATS)}")
    target = output if output is not None else run_dir / f"model{EXPORT_FORMATS[fmt]}"
    _check_new_file(target)
    if fmt == "onnx":
        _require_onnx_exporter()
    run = load_run(run_dir, plugins, choice)
    example = run.weights.example_input
    if example is None:
        raise CheckpointError(
            f"{run.weights.path}: no example input stored for this run (its checkpoints predate "
            "pipeforge storing one); export needs one training sample to trace the model. "
            "Train a new run, or pass --checkpoint with a newer checkpoint."
        )
    example = example.to("cpu").contiguous()
    samples = [example, torch.cat([example, example])]
    with torch.no_grad():
        expected = [tensor_output(run.model(x), run.recipe.model.name) for x in samples]
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    tolerance = 1e-4 * scale
    if fmt == "torchscript":
        _write_new(target, lambda staged: _save_torchscript(run.model, samples[1], staged), fmt)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # see _save_torchscript
            loaded = torch.jit.load(str(target), map_location="cpu")
            actual = [loaded(x) for x in samples]
    else:
        _write_new(target, lambda staged: _save_onnx(run.model, samples[1], staged), fmt)
        actual_or_reason = _run_onnx(target, samples)
        if isinstance(actual_or_reason, str):
            return Export(target, fmt, run.weights.path, None, tolerance, skipped=actual_or_reason)
        actual = actual_or_reason
    diff = max(float((a.float() - e.float()).abs().max()) for a, e in zip(actual, expected))
    return Export(target, fmt, run.weights.path, diff, tolerance)




def _check_new_file(target: Path) -> None:
    if target.exists():
        raise UsageError(f"{target} already exists; nothing was written. Choose another file with -o FILE.")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent}: no such directory for the output file")


def _write_new(target: Path, write: Callable[[Path], None], fmt: str) -> None:
    """Have `write` produce `target` in a private temp dir, then link it into place.

    `os.link` fails if the name exists, so a file that appeared meanwhile is never replaced;
    side files the writer makes (ONNX external weights, `<name>.data`) are placed first. A
    model the exporter cannot handle is a `PipeforgeError` (exit 1) and leaves no file.
    """
    _check_new_file(target)
    with _staging_dir(target) as tmp:
        staged = Path(tmp) / target.name
        try:
            write(staged)
        except Exception as exc:  # tracing failures come as many torch exception types
            reason = " ".join(str(exc).split())[:500] or type(exc).__name__
            raise PipeforgeError(f"cannot export the model as {fmt}: {type(exc).__name__}: {reason}") from exc
        files = [p for p in sorted(Path(tmp).iterdir()) if p != staged] + [staged]
        placed: list[Path] = []
        try:
            for path in files:
                os.link(path, target.parent / path.name)
                placed.append(target.parent / path.name)
        except OSError as exc:
            for path in placed:
                path.unlink(missing_ok=True)
            if isinstance(exc, FileExistsError):
                raise UsageError(f"{exc.filename2 or target} already exists; nothing was written.") from None
            raise UsageError(f"cannot write {target}: {exc.strerror or exc}; nothing was written") from None


@contextlib.contextmanager
def _staging_dir(target: Path) -> Iterator[str]:
    """A private temp dir beside `target`; `UsageError` naming `target` where none can be made
    (a read-only place). Removed afterwards with whatever is left in it."""
    try:
        staging = tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}; nothing was written") from None
    with staging as tmp:
        yield tmp


def _save_torchscript(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # torch 2.14 marks torch.jit as deprecated; the format is still what many runtimes load.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, sample)
        torch.jit.save(traced, str(path))


def _require_onnx_exporter() -> None:
    """torch's ONNX exporter (torch.export based, the default) needs onnx and onnxscript."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"ONNX export needs {' and '.join(missing)}, which are not installed: {ONNX_INSTALL}")


def _save_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    import contextlib
    import io

    batch = torch.export.Dim("batch")
    # The exporter reports its progress on stdout and warns on stderr; the CLI owns both.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (sample,), dynamo=True, verbose=False, input_names=["input"],
            output_names=["output"], dynamic_shapes=({0: batch},),
        )
    # Weights go to a side file `<name>.data` only when the model is over protobuf's 2 GB.
    program.save(str(path))


def _run_onnx(path: Path, samples: list[torch.Tensor]) -> list[torch.Tensor] | str:
    """The ONNX file's outputs under onnxruntime, or why they could not be computed."""
    try:
        import onnxruntime
    except ImportError:
        return f"onnxruntime is not installed ({ONNX_INSTALL})"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in samples]
