"""The `mlflow.logger` callback: one pipeforge run is one MLflow run, across resumes.

What it logs:
- params: the run's recipe.toml flattened to dotted keys (`optimizer.lr`, `callbacks.0.name`),
  at the start (a resume with a changed value, e.g. `trainer.epochs`, sets the tag
  `pipeforge.resumed.<key>`: MLflow params cannot change);
- metrics: every key of each epoch's metrics.jsonl row with the epoch as the step, and the
  training loss every `log_every_n_steps` optimizer steps under `step_key` with the global step.
  The losses stay on the device and are sent together (one device-to-host copy, one request)
  at each epoch end, and within long epochs every `flush_every_s` or `MAX_PENDING` steps, so a
  step never waits for the host or the network;
- tags: pipeforge's, this plugin's, torch's and every plugin's version, the seed, the run dir;
- artifacts: recipe.toml and env.json at the start (of every session, on resume), and the final
  model.pt with `log_model`.

Resume: the MLflow run id is in the callback's checkpoint state, so a resumed run continues that
run. Epochs and steps after the checkpoint were logged by the process that died and are trained
again: whatever (key, step) the MLflow run already holds is not logged twice (on the CPU the
values are bitwise the same; see the README), so a kill -9 and a resume leave each epoch's metrics
exactly once. Callbacks run on rank 0 only, so a data-parallel job logs once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeforge import BuildContext, Callback, Interrupted, PluginError, RunState, TimeLimitReached

from pipeforge_mlflow.plugin import MLflowParams

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("pipeforge.mlflow")
MAX_PENDING = 1000  # losses held before they are sent, whatever the time (MLflow's batch limit)
MAX_PARAM_LENGTH = 6000  # MLflow refuses longer param values
LABEL = "callback 'mlflow.logger'"
RUN_FILE = "mlflow_run.json"  # in the run dir: which MLflow run this run logs to


class MLflowLogger(Callback):
    def __init__(self, params: MLflowParams) -> None:
        self.params = params
        self.client: Any = None
        self.run_id: str | None = None  # from load_state_dict on resume
        self.saved_uri: str | None = None  # the store a resumed run lives in (None: the run dir's)
        self.logged: set[tuple[str, int]] = set()  # (key, step) the MLflow run held at resume
        self.pending: list[tuple[Any, int, int]] = []  # (loss on the device, step, time in ms)
        self.last_step = -1
        self.sent_at = 0.0

    # ------------------------------------------------------------------ lifecycle

    def on_fit_start(self, state: RunState) -> None:
        from mlflow import MlflowClient

        saved = read_json(state.run_dir / RUN_FILE)
        if self.run_id is None and saved.get("run_id"):  # resumed with no checkpoint
            self.run_id, self.saved_uri = str(saved["run_id"]), saved.get("tracking_uri")
        resuming = self.run_id is not None
        uri = self.saved_uri if resuming else (self.params.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        self.saved_uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri or local_store(state.run_dir))
            if resuming:
                self._continue(state)
            else:
                self._start(state)
        except PluginError:
            raise
        except Exception as exc:  # the store or server's own error, said once with where
            raise PluginError(f"{LABEL}: MLflow store {uri or local_store(state.run_dir)}: {one_line(exc)}") from None
        self.last_step = state.global_step
        self.sent_at = time.monotonic()

    def on_batch_end(self, state: RunState, loss: Any) -> None:
        step = state.global_step
        if step == self.last_step:  # inside an accumulation group: no optimizer step yet
            return
        self.last_step = step
        if step % self.params.log_every_n_steps == 0:
            self.pending.append((loss.detach(), step, now_ms()))
            if len(self.pending) >= MAX_PENDING or time.monotonic() - self.sent_at >= self.params.flush_every_s:
                self.send_pending()

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        self.send_pending()
        stamp = now_ms()
        self._log_metrics([Metric(key, float(value), stamp, epoch) for key, value in metrics.items()
                           if key != "epoch" and isinstance(value, (int, float))])

    def on_fit_end(self, state: RunState) -> None:
        if self.client is None:
            return
        error = sys.exc_info()[1]  # on_fit_end runs in the engine's `finally`: the error, if any
        try:
            self.send_pending()  # also after a failure: what was trained is logged
            if error is None and self.params.log_model and (state.run_dir / "model.pt").is_file():
                self.client.log_artifact(self.run_id, str(state.run_dir / "model.pt"))
            status = "FINISHED" if error is None else "KILLED" if isinstance(error, (Interrupted, TimeLimitReached, KeyboardInterrupt)) else "FAILED"
            # MLflow writes "View run … at: URL" to stdout for a server's runs: the console is
            # the CLI's, so the line goes to the `pipeforge` logger instead.
            with contextlib.redirect_stdout(io.StringIO()) as said:
                self.client.set_terminated(self.run_id, status=status)
            if said.getvalue().strip():
                log.info("%s", said.getvalue().strip())
        except Exception as exc:
            if error is None:
                raise PluginError(f"{LABEL}: could not finish MLflow run {self.run_id}: {one_line(exc)}") from None
            # The run failed already: that error is the one to report.

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.saved_uri}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id, self.saved_uri = state["run_id"], state["tracking_uri"]

    # ------------------------------------------------------------------ the MLflow run

    def _start(self, state: RunState) -> None:
        recipe = read_recipe(state.run_dir)
        name = self.params.experiment or recipe.get("run", {}).get("name") or "pipeforge"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # In the run dir's own store the artifacts go beside it; a server decides for itself.
            location = (state.run_dir / "mlartifacts").resolve().as_uri() if self.saved_uri is None else None
            experiment_id = self.client.create_experiment(name, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=self.params.run_name or state.run_dir.name,
                                     tags=self._tags(state))
        self.run_id = run.info.run_id
        # Also beside the checkpoints: a run killed before its first checkpoint, then resumed
        # from the start, continues this MLflow run too.
        write_json(state.run_dir / RUN_FILE, {"run_id": self.run_id, "tracking_uri": self.saved_uri})
        self._log_params(flatten(recipe))
        self._log_files(state)

    def _continue(self, state: RunState) -> None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(self.run_id)
        except MlflowException:
            raise PluginError(f"{LABEL}: the MLflow run {self.run_id} this run logged to is not in the store "
                              f"{self.client.tracking_uri}; resume where that store is reachable") from None
        self.client.update_run(self.run_id, status="RUNNING")
        for key in run.data.metrics:
            self.logged |= {(key, m.step) for m in self.client.get_metric_history(self.run_id, key)}
        recipe = flatten(read_recipe(state.run_dir))
        new = {k: v for k, v in recipe.items() if k not in run.data.params}
        changed = {f"pipeforge.resumed.{k}": v for k, v in recipe.items()
                   if k in run.data.params and run.data.params[k] != v}
        self._log_params(new)
        for key, value in changed.items():
            self.client.set_tag(self.run_id, key, value)
        self._log_files(state)

    def _tags(self, state: RunState) -> dict[str, str]:
        env = read_json(state.run_dir / "env.json")
        tags = {"pipeforge.version": str(env.get("pipeforge", "")),
                "pipeforge.mlflow_version": metadata.version("pipeforge-mlflow"),
                "pipeforge.torch_version": str(env.get("torch", "")),
                "pipeforge.seed": str(env.get("seed", state.recipe.run.seed)),
                "pipeforge.run_dir": str(state.run_dir.resolve())}
        for plugin in env.get("plugins", []):
            tags[f"pipeforge.plugin.{plugin['name']}"] = f"{plugin['distribution']} {plugin['version']}"
        tags.update(self.params.tags)
        return tags

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a request
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def _log_metrics(self, metrics: list[Any]) -> None:
        fresh = [m for m in metrics if (m.key, m.step) not in self.logged]
        for start in range(0, len(fresh), 1000):  # and at most 1000 metrics
            try:
                self.client.log_batch(self.run_id, metrics=fresh[start:start + 1000])
            except Exception as exc:
                raise PluginError(f"{LABEL}: logging to MLflow run {self.run_id} failed: {one_line(exc)}") from None

    def _log_files(self, state: RunState) -> None:
        for name in ("recipe.toml", "env.json"):
            if (state.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(state.run_dir / name))

    def send_pending(self) -> None:
        """Send the buffered losses: one device-to-host copy and one request for all of them."""
        if self.pending:
            import torch
            from mlflow.entities import Metric

            values = torch.stack([loss for loss, _, _ in self.pending]).float().tolist()
            key = self.params.step_key
            self._log_metrics([Metric(key, value, stamp, step) for value, (_, step, stamp) in zip(values, self.pending)])
            self.pending.clear()
        self.sent_at = time.monotonic()


def local_store(run_dir: Path) -> str:
    """The default store: SQLite in the run dir (MLflow's file store is in maintenance mode)."""
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def read_recipe(run_dir: Path) -> dict[str, Any]:
    with open(run_dir / "recipe.toml", "rb") as handle:
        return tomllib.load(handle)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A recipe as MLflow params: dotted keys (`optimizer.lr`, `metrics.0.name`), values as
    text (lists of numbers as JSON), cut to MLflow's longest param value."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{index}."))
        return out
    text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
    return {prefix[:-1]: text[:MAX_PARAM_LENGTH]}


def write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def now_ms() -> int:
    return int(time.time() * 1000)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build(params: MLflowParams, context: BuildContext) -> MLflowLogger:
    # MLflow announces creating and upgrading a store's tables on its own stderr handler; the
    # console belongs to pipeforge's CLI.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MLflowLogger(params)
