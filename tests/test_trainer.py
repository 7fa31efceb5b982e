"""Trainer controls against hand-written torch loops doing the same thing, and exact resume of
each: per-step schedules with warm-up, gradient accumulation, clipping, fp16, limits."""

from __future__ import annotations

import math
import signal

import pytest
import torch

import pipeforge
from conftest import RECIPES, run_in_process, run_pipeforge
from pipeforge import Callback, Interrupted, RecipeError, StopRequest
from pipeforge.builtin import params as p
from pipeforge.builtin.synthetic import build_dataset, build_mlp
from pipeforge.context import BuildContext
from pipeforge.setup import seed_everything
from pipeforge import TimeLimitReached

BASE = {
    "run": {"name": "trainer", "seed": 7},
    "dataset": {"name": "synthetic_classification", "n_train": 70, "n_val": 20, "features": 6, "classes": 3},
    "model": {"name": "mlp", "in_features": 6, "hidden": [16]},
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "trainer": {"epochs": 3, "batch_size": 8, "shuffle": False},
    "callbacks": [],
}


def recipe(**trainer) -> dict:
    return {**BASE, "trainer": {**BASE["trainer"], **trainer}}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def hand_setup(seed: int = 7):
    """What the engine builds for BASE, by hand: seed, then data, then the model."""
    seed_everything(seed)
    context = BuildContext(registry=None, seed=seed, device="cpu")
    data = BASE["dataset"]
    context.datasets = build_dataset(p.SyntheticClassificationParams(**{k: v for k, v in data.items() if k != "name"}), context)
    model = build_mlp(p.MLPParams(in_features=6, hidden=[16]), context)
    x, y = context.datasets.splits["train"].tensors
    return model, x, y


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Recorder(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.norms: list[float] = []

    def on_batch_end(self, state):
        self.lrs.append(state.optimizer.param_groups[0]["lr"])
        if state.grad_norm is not None:
            self.norms.append(float(state.grad_norm))


# ------------------------------------------------------------------------------ schedules


def test_per_step_warmup_then_cosine_is_torchs_sequence(tmp_path):
    recorder = Recorder()
    run = {**recipe(), "scheduler": {"name": "cosine", "interval": "step", "warmup_steps": 5,
                                     "warmup_start_factor": 0.1, "eta_min": 0.01}}
    result = pipeforge.run(run, run_dir=tmp_path / "run", callbacks=[recorder])
    total = 3 * math.ceil(70 / 8)  # 27 optimizer steps
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, 5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total - 5, 0.01)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], [5])
    expected = []
    for _ in range(total):
        optimizer.step()
        schedule.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert recorder.lrs == expected  # after each step's update, as the hook sees it
    assert result.state.global_step == total and recorder.lrs[-1] == pytest.approx(0.01)


def test_schedule_units_that_cannot_match_are_validation_errors(tmp_path):
    bad = [
        ({"name": "cosine", "warmup_steps": 5}, 'warmup_steps counts optimizer steps: set interval = "step"'),
        ({"name": "cosine", "interval": "step", "warmup_epochs": 1}, "warmup_epochs counts epochs"),
        ({"name": "cosine", "warmup_ratio": 0.1, "warmup_steps": 3, "interval": "step"}, "not several"),
    ]
    for table, message in bad:
        with pytest.raises(RecipeError, match=message):
            pipeforge.run({**recipe(), "scheduler": table}, run_dir=tmp_path / "never")
    with pytest.raises(RecipeError, match="the warm-up is 40 of the run's 27 optimizer steps"):
        pipeforge.run({**recipe(), "scheduler": {"name": "cosine", "interval": "step", "warmup_steps": 40}},
                      run_dir=tmp_path / "a")
    with pytest.raises(RecipeError, match='use interval = "epoch"'):
        pipeforge.run({**recipe(), "scheduler": {"name": "reduce_on_plateau", "interval": "step"}},
                      run_dir=tmp_path / "b")


def test_reduce_on_plateau_steps_with_its_metric(tmp_path):
    run = {**recipe(epochs=6), "optimizer": {"name": "sgd", "lr": 0.2},
           "scheduler": {"name": "reduce_on_plateau", "monitor": "val_accuracy", "patience": 0, "factor": 0.5}}
    rows = pipeforge.run(run, run_dir=tmp_path / "run").history
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    for row in rows:
        assert row["lr"] == optimizer.param_groups[0]["lr"]
        plateau.step(row["val_accuracy"])


# ------------------------------------------------------------------------------ accumulation, clipping


def test_accumulating_4_batches_of_8_equals_one_batch_of_32(tmp_path):
    # 70 samples: groups of 32, 32 and a short last one of 6 on both sides.
    accumulated = pipeforge.run(recipe(batch_size=8, accumulate_grad_batches=4), run_dir=tmp_path / "a")
    whole = pipeforge.run(recipe(batch_size=32), run_dir=tmp_path / "b")
    assert accumulated.state.global_step == whole.state.global_step == 9
    mine, theirs = weights(accumulated.state.model), weights(whole.state.model)
    assert all(torch.allclose(mine[k], theirs[k], atol=1e-6, rtol=0) for k in theirs)
    assert accumulated.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], abs=1e-6)


def test_clipped_norms_equal_clip_grad_norms_in_a_hand_loop(tmp_path):
    recorder = Recorder()
    result = pipeforge.run(recipe(clip_grad_norm=0.5, log_grad_norm=True), run_dir=tmp_path / "run",
                           callbacks=[recorder])
    model, x, y = hand_setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    norms = []
    for _ in range(3):
        for start in range(0, 70, 8):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[start:start + 8]), y[start:start + 8]).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
            optimizer.step()
    assert recorder.norms == pytest.approx(norms, rel=1e-5)
    assert max(norms) > 0.5  # clipping happened
    mine, theirs = weights(result.state.model), weights(model)
    assert all(torch.allclose(mine[k], theirs[k], atol=1e-6) for k in theirs)
    assert result.history[0]["grad_norm"] == pytest.approx(sum(norms[:9]) / 9, rel=1e-5)


# ------------------------------------------------------------------------------ exact resume


class StopAt(Callback):
    """Sets the stop request at a chosen batch, as a signal handler would."""

    def __init__(self, stop: StopRequest, batch: int, epoch: int = 2) -> None:
        self.stop, self.batch, self.epoch = stop, batch, epoch

    def on_batch_end(self, state, batch_index):
        if state.epoch == self.epoch and batch_index == self.batch:
            self.stop.signal = signal.SIGTERM


@pytest.mark.parametrize("trainer", [
    {"accumulate_grad_batches": 3},  # batch 4 is inside the group of batches 3-5
    {"precision": "fp16", "clip_grad_norm": 1.0, "log_grad_norm": True},
], ids=["mid-accumulation-group", "fp16"])
def test_a_stop_then_resume_is_bitwise_identical(trainer, tmp_path):
    run = {**recipe(**trainer), "scheduler": {"name": "cosine", "interval": "step", "warmup_ratio": 0.5}}
    reference = pipeforge.run(run, run_dir=tmp_path / "reference")
    stop = StopRequest()
    with pytest.raises(Interrupted):
        pipeforge.run(run, run_dir=tmp_path / "run", stop=stop, callbacks=[StopAt(stop, batch=4)])
    resumed = pipeforge.resume(tmp_path / "run")
    mine, theirs = weights(resumed.state.model), weights(reference.state.model)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()


# ------------------------------------------------------------------------------ limits


def test_max_steps_ends_the_run_as_finished(tmp_path):
    result = pipeforge.run(recipe(epochs=10, max_steps=12), run_dir=tmp_path / "run")
    assert result.state.global_step == 12 and len(result.history) == 2  # 9 + 3 steps
    assert result.stop_reason == "max_steps (12) reached" and (tmp_path / "run" / "model.pt").is_file()


def test_max_time_checkpoints_and_a_resume_completes(tmp_path):
    reference = pipeforge.run(recipe(), run_dir=tmp_path / "reference")
    with pytest.raises(TimeLimitReached, match="Resume with: pipeforge run --resume"):
        pipeforge.run(recipe(max_time=0.001), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()
    resumed = pipeforge.resume(tmp_path / "run", overrides=["trainer.max_time=\"2h30m\""])
    mine, theirs = weights(resumed.state.model), weights(reference.state.model)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.slow  # trains
def test_max_time_exits_3_with_the_resume_command(tmp_path):
    result = run_in_process("run", RECIPES / "quickstart.toml", "--run-dir", tmp_path / "run", "--quiet",
                           "--set", "trainer.max_time=0.001", "--set", "callbacks=[]", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "trainer.max_time" in result.stderr and f"pipeforge run --resume {tmp_path / 'run'}" in result.stderr


def test_bad_trainer_values_are_refused_at_validate(tmp_path):
    for trainer, message in [
        ({"max_time": "soon"}, "expected a duration"),
        ({"max_time": 0}, "positive duration"),
        ({"clip_grad_norm": 1.0, "clip_grad_value": 1.0}, "not both"),
        ({"accumulate_grad_batches": 0}, "greater than or equal to 1"),
    ]:
        with pytest.raises(RecipeError, match=message):
            pipeforge.run(recipe(**trainer), run_dir=tmp_path / "never")


def test_deterministic_mode_and_the_model_summary(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    seen = []

    class Watch(Callback):
        def on_fit_start(self, state):
            seen.append(torch.are_deterministic_algorithms_enabled())

    result = pipeforge.run(recipe(deterministic=True), run_dir=tmp_path / "run", callbacks=[Watch()])
    assert seen == [True] and torch.are_deterministic_algorithms_enabled() == before  # restored after
    parameters = 6 * 16 + 16 + 16 * 3 + 3
    assert result.state.model_summary == {"parameters": parameters, "trainable": parameters,
                                          "size_mb": round(parameters * 4 / 2**20, 3)}
    import json

    assert json.loads((tmp_path / "run" / "env.json").read_text())["model"] == result.state.model_summary


# ------------------------------------------------------------------------------ EMA


def test_ema_weights_equal_averaged_models_in_a_hand_loop(tmp_path):
    result = pipeforge.run(recipe(ema_decay=0.9, ema_every_steps=2), run_dir=tmp_path / "run")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model, x, y = hand_setup()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    step = 0
    for _ in range(3):
        for start in range(0, 70, 8):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[start:start + 8]), y[start:start + 8]).backward()
            optimizer.step()
            step += 1
            if step % 2 == 0:
                ema.update_parameters(model)
    mine, theirs = weights(result.state.ema.module), weights(ema.module)
    assert all(torch.allclose(mine[k], theirs[k], atol=1e-7, rtol=0) for k in theirs)
    assert not torch.equal(mine["1.weight"], weights(result.state.model)["1.weight"])
    saved = torch.load(tmp_path / "run" / "model_ema.pt", weights_only=True)
    assert all(torch.equal(saved[k], mine[k]) for k in mine)


def test_ema_resumes_bitwise_and_serves_evaluate_predict_export(tmp_path):
    run = recipe(ema_decay=0.8, ema_for_eval=True)
    reference = pipeforge.run(run, run_dir=tmp_path / "reference")
    stop = StopRequest()
    with pytest.raises(Interrupted):
        pipeforge.run(run, run_dir=tmp_path / "run", stop=stop, callbacks=[StopAt(stop, batch=3)])
    pipeforge.resume(tmp_path / "run")
    for name in ("model.pt", "model_ema.pt"):
        mine = torch.load(tmp_path / "run" / name, weights_only=True)
        theirs = torch.load(tmp_path / "reference" / name, weights_only=True)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()
    # metrics.jsonl evaluated the averaged weights: `--checkpoint ema` reproduces its last row.
    evaluation = pipeforge.evaluate(tmp_path / "run", checkpoint="ema")
    assert evaluation.metrics["val_accuracy"] == reference.history[-1]["val_accuracy"]
    assert evaluation.metrics["val_loss"] == pytest.approx(reference.history[-1]["val_loss"], rel=1e-5)
    exported = run_in_process("export", tmp_path / "run", "--format", "torchscript", "--checkpoint", "ema",
                              "-o", tmp_path / "ema.ts", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr


def test_evaluate_ema_of_a_run_without_it_names_the_setting(tmp_path):
    pipeforge.run(recipe(epochs=1), run_dir=tmp_path / "run")
    with pytest.raises(pipeforge.CheckpointError, match="trainer.ema_decay"):
        pipeforge.evaluate(tmp_path / "run", checkpoint="ema")


def test_mid_epoch_evaluations_carry_their_step_and_resume_exactly(tmp_path):
    run = recipe(epochs=2, eval_every_steps=4)
    reference = pipeforge.run(run, run_dir=tmp_path / "reference")
    steps = [(row["epoch"], row.get("step"), "train_loss" in row) for row in reference.history]
    # 9 optimizer steps per epoch: evaluations after steps 4 and 8, then the epoch's own row.
    assert steps == [(1, 4, False), (1, 8, False), (1, None, True), (2, 12, False), (2, 16, False), (2, None, True)]
    assert all("val_accuracy" in row and "lr" in row for row in reference.history)
    stop = StopRequest()
    with pytest.raises(Interrupted):
        pipeforge.run(run, run_dir=tmp_path / "run", stop=stop, callbacks=[StopAt(stop, batch=5, epoch=2)])
    resumed = pipeforge.resume(tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()
    mine, theirs = weights(resumed.state.model), weights(reference.state.model)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.slow  # trains
def test_the_console_shows_the_model_summary_at_start(tmp_path):
    result = run_in_process("run", RECIPES / "quickstart.toml", "--run-dir", tmp_path / "run",
                           "--set", "trainer.epochs=1", "--set", "callbacks=[]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model: 1,283 parameters (1,283 trainable), 0.005 MB" in result.stdout + result.stderr  # 16-64-3 MLP


@pytest.mark.slow
def test_kill_9_inside_an_accumulation_group_during_warmup_with_fp16_and_ema(tmp_path, killer_env):
    """SIGKILL between two batches of one group, inside the warm-up, under fp16 with EMA and
    clipping: `--resume` continues from the newest checkpoint and ends bitwise identical."""
    sets = ["trainer.epochs=3", "callbacks=[]", "trainer.accumulate_grad_batches=3", "trainer.precision=\"fp16\"",
            "trainer.ema_decay=0.9", "trainer.clip_grad_norm=1.0", "trainer.checkpoint_every_steps=4",
            "scheduler={name = \"cosine\", interval = \"step\", warmup_steps = 20}"]
    args = [arg for text in sets for arg in ("--set", text)]
    reference = tmp_path / "reference"  # trained in this process; the killed run is a process
    done = run_in_process("run", RECIPES / "quickstart.toml", "--run-dir", reference, "--quiet", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    # 32 batches an epoch, groups of 3: epoch 1's batch 16 is the second of the group 15-17,
    # after step 5 (checkpointed at step 4), inside the 20-step warm-up.
    killed = run_pipeforge("run", RECIPES / "quickstart.toml", "--run-dir", run_dir, "--quiet", *args, cwd=tmp_path,
                           env={**killer_env, "KILL_AT_BATCH": "1:16"})
    assert killed.returncode == -signal.SIGKILL
    resumed = run_in_process("run", "--resume", run_dir, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.pt", "model_ema.pt"):
        mine = torch.load(run_dir / name, weights_only=True)
        theirs = torch.load(reference / name, weights_only=True)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    assert (run_dir / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
