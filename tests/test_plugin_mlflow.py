"""The `mlflow.logger` callback against the real MLflow: a local SQLite store read back with
`MlflowClient`, and a real `mlflow server` on 127.0.0.1 logged to over HTTP by a run that is
killed with SIGKILL after an epoch its checkpoint does not cover, then resumed: one MLflow run,
every epoch's metrics and every step's loss exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import pipeforge
from conftest import BIN, run_pipeforge

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE = {
    "run": {"name": "mlflow", "seed": 3},
    "dataset": {"name": "synthetic_classification", "n_train": 64, "n_val": 32, "features": 4},
    "model": {"name": "mlp", "in_features": 4, "hidden": [8]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"epochs": 2, "batch_size": 16},
    "callbacks": [{"name": "mlflow.logger", "log_model": True, "tags": {"team": "tests"}}],
}
STEPS_PER_EPOCH = 4  # 64 samples, batches of 16


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_logged_exactly_once(client, run_id: str, run_dir: Path) -> None:
    """Every key of every epoch row once per epoch, with its value; the loss once per step."""
    rows = rows_of(run_dir)
    for key in rows[0]:
        if key != "epoch":
            assert history(client, run_id, key) == [(row["epoch"], row[key]) for row in rows], key
    steps = [step for step, _ in history(client, run_id, "train_loss_step")]
    assert steps == list(range(1, len(rows) * STEPS_PER_EPOCH + 1))


@pytest.mark.slow  # MLflow takes seconds to import and to create a store
def test_a_run_in_the_local_store_reads_back(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = pipeforge.run(RECIPE, run_dir=tmp_path / "run")
    client = MlflowClient(f"sqlite:///{result.run_dir / 'mlflow.db'}")  # the default: in the run dir
    experiment = client.get_experiment_by_name("mlflow")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert_logged_exactly_once(client, run.info.run_id, result.run_dir)
    params = run.data.params
    assert params["optimizer.lr"] == "0.1" and params["model.hidden"] == "[8]"
    assert params["callbacks.0.name"] == "mlflow.logger" and params["trainer.epochs"] == "2"
    tags = run.data.tags
    assert tags["pipeforge.version"] == pipeforge.__version__ and tags["pipeforge.seed"] == "3"
    assert tags["pipeforge.mlflow_version"] == "0.1.0" and tags["team"] == "tests"
    assert tags["pipeforge.plugin.mlflow"] == "pipeforge-mlflow 0.1.0"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"recipe.toml", "env.json", "model.pt"}
    copy = Path(client.download_artifacts(run.info.run_id, "recipe.toml", str(tmp_path)))
    assert copy.read_bytes() == (result.run_dir / "recipe.toml").read_bytes()
    assert (result.run_dir / "mlartifacts").is_dir()  # the artifacts stay in the run dir too


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 and a free port, in its own process group (stopped
    after). Its job runner is off: it starts a pool of worker processes the tests do not use."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow  # a server, a killed subprocess
def test_kill_9_and_resume_over_http_is_one_mlflow_run(tmp_path, killer_env, mlflow_server):
    from mlflow import MlflowClient

    from pipeforge.checkpoint import latest_valid

    recipe = tmp_path / "mlflow.toml"
    recipe.write_text(
        '[run]\nname = "mlflow-http"\nseed = 3\n'
        '[dataset]\nname = "synthetic_classification"\nn_train = 64\nn_val = 32\nfeatures = 4\n'
        '[model]\nname = "mlp"\nin_features = 4\nhidden = [8]\n'
        '[optimizer]\nname = "sgd"\nlr = 0.1\n'
        '[trainer]\nepochs = 3\nbatch_size = 16\ncheckpoint_every_epochs = 1\n'
        f'[[callbacks]]\nname = "mlflow.logger"\ntracking_uri = "{mlflow_server}"\n')
    run_dir = tmp_path / "run"
    # SIGKILL in epoch 2's on_epoch_end: its metrics are in MLflow, its checkpoint never written.
    killed = run_pipeforge("run", recipe, "--run-dir", run_dir, "--quiet", cwd=tmp_path,
                           env={**killer_env, "KILL_AFTER_EPOCH": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("mlflow-http").experiment_id])
    assert run.info.status == "RUNNING" and [s for s, _ in history(client, run.info.run_id, "val_loss")] == [1, 2]
    _, saved = latest_valid(run_dir / "checkpoints")
    assert saved.epochs_done == 1 and saved.callbacks["0.mlflow.logger"]["run_id"] == run.info.run_id

    pipeforge.resume(run_dir)  # in-process: the kill is what needs a process of its own
    (after,) = client.search_runs([run.info.experiment_id])  # still one run: the same one
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert_logged_exactly_once(client, run.info.run_id, run_dir)
    assert [row["epoch"] for row in rows_of(run_dir)] == [1, 2, 3]
    with open(run_dir / "recipe.toml", "rb") as handle:
        assert after.data.params["trainer.epochs"] == str(tomllib.load(handle)["trainer"]["epochs"])
    # The artifacts went over HTTP to the server's artifact store, not into the run dir.
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"recipe.toml", "env.json"}
    assert not (run_dir / "mlartifacts").exists() and not (run_dir / "mlflow.db").exists()


def test_a_tracking_uri_without_a_scheme_is_refused_at_validate(tmp_path, capsys):
    from pipeforge.cli import main

    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nname = "x"\n[dataset]\nname = "synthetic_classification"\n'
                      '[model]\nname = "mlp"\nin_features = 16\n[optimizer]\nname = "sgd"\nlr = 0.1\n'
                      '[[callbacks]]\nname = "mlflow.logger"\ntracking_uri = "runs/mlflow"\n')
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "callbacks[0].tracking_uri" in err and "sqlite:////abs/path/mlflow.db" in err
