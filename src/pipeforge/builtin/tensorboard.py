"""The TensorBoard callback: a plugin object on the public lifecycle hooks.

Writes the training loss every `log_every_n_steps` steps under `batch_tag` (the popularity seed's
`Loss/train`) and every epoch metric as `Loss/<split>` / `Accuracy/<split>` / `<metric>/<split>`
with the epoch as the step, into `<run dir>/tensorboard/` (the per-epoch training loss is
`Loss/train_epoch`, so it does not mix with the per-step curve; the learning rate is `LearningRate`).
"""

from __future__ import annotations

from typing import Any

from pipeforge.builtin import params as p
from pipeforge.context import BuildContext, RunState
from pipeforge.hookspecs import hookimpl


class TensorBoardLogger:
    def __init__(self, params: p.TensorBoardParams) -> None:
        self.params = params
        self.writer: Any = None

    @hookimpl
    def on_fit_start(self, state: RunState) -> None:
        # tensorboard is imported here, not at module import: it costs ~1 s of start-up.
        from torch.utils.tensorboard import SummaryWriter

        # On resume, events logged after the checkpoint are superseded (purge_step).
        self.writer = SummaryWriter(log_dir=str(state.run_dir / "tensorboard"), purge_step=state.global_step or None)

    @hookimpl
    def on_batch_end(self, state: RunState, loss: Any) -> None:
        if state.global_step % self.params.log_every_n_steps == 0:
            # .item() waits for the device; that is the price of a per-step curve.
            self.writer.add_scalar(self.params.batch_tag, loss.item(), state.global_step - 1)

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(epoch_tag(key, self.params.batch_tag), value, epoch - 1)
        self.writer.flush()

    @hookimpl
    def on_fit_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def epoch_tag(key: str, batch_tag: str) -> str:
    """`val_accuracy` → `Accuracy/val`; `lr` → `LearningRate`; never the per-step tag."""
    if key == "lr":
        return "LearningRate"
    split, _, metric = key.partition("_")
    tag = f"{metric.capitalize()}/{split}"
    return f"{tag}_epoch" if tag == batch_tag else tag


def build(params: p.TensorBoardParams, context: BuildContext) -> TensorBoardLogger:
    return TensorBoardLogger(params)
