"""pipeforge's built-in plugin: optimizers, schedulers, losses, accuracy, TensorBoard, vision
transforms, and a synthetic dataset with an MLP so a recipe runs with no download.

It is registered through the `pipeforge` entry-point group exactly like a third-party plugin.
Builders are named lazily ("module:function") so that discovery never imports torch.
"""

from __future__ import annotations

from pipeforge.builtin import params as p
from pipeforge.builtin.csv_logger import CSVParams
from pipeforge.builtin.stopping import EarlyStoppingParams
from pipeforge.hookspecs import hookimpl
from pipeforge.registry import Component, NoParams

_B = "pipeforge.builtin"

COMPONENTS = [
    Component("optimizer", "sgd", p.SGDParams, f"{_B}.optim:build_sgd", "Stochastic gradient descent (torch.optim.SGD)."),
    Component("optimizer", "adam", p.AdamParams, f"{_B}.optim:build_adam", "Adam (torch.optim.Adam)."),
    Component("optimizer", "adamw", p.AdamWParams, f"{_B}.optim:build_adamw", "AdamW (torch.optim.AdamW)."),
    Component("scheduler", "step_lr", p.StepLRParams, f"{_B}.optim:build_step_lr", "Decay the learning rate by gamma every step_size scheduler steps (StepLR)."),
    Component("scheduler", "multistep", p.MultiStepParams, f"{_B}.optim:build_multistep", "Decay the learning rate by gamma at each milestone (MultiStepLR)."),
    Component("scheduler", "cosine", p.CosineParams, f"{_B}.optim:build_cosine", "Cosine annealing of the learning rate down to eta_min (CosineAnnealingLR)."),
    Component("scheduler", "linear", p.LinearDecayParams, f"{_B}.optim:build_linear", "Linear decay of the learning rate to lr × end_factor (LinearLR)."),
    Component("scheduler", "one_cycle", p.OneCycleParams, f"{_B}.optim:build_one_cycle", "The one-cycle policy up to max_lr and down (OneCycleLR)."),
    Component("scheduler", "reduce_on_plateau", p.PlateauParams, f"{_B}.optim:build_plateau", "Reduce the learning rate when a metric stops improving (ReduceLROnPlateau; epoch interval)."),
    Component("scheduler", "constant", p.ConstantParams, f"{_B}.optim:build_constant", "A constant learning rate (ConstantLR), e.g. with a warm-up."),
    Component("loss", "cross_entropy", p.CrossEntropyParams, f"{_B}.losses:build_cross_entropy", "Cross-entropy over class logits (targets are class indices)."),
    Component("loss", "mse", p.MSEParams, f"{_B}.losses:build_mse", "Mean squared error."),
    Component("metric", "accuracy", p.AccuracyParams, f"{_B}.metrics:build_accuracy", "Fraction of samples whose target is among the top-k logits."),
    Component("callback", "early_stopping", EarlyStoppingParams, f"{_B}.stopping:build_early_stopping", "Stop the run when a metric has not improved for `patience` epochs."),
    Component("callback", "csv", CSVParams, f"{_B}.csv_logger:build", "Write every epoch's metrics as a row of <run dir>/metrics.csv (header from the keys)."),
    Component("callback", "tensorboard", p.TensorBoardParams, f"{_B}.tensorboard:build", "Write the loss per step and every metric per epoch to <run dir>/tensorboard."),
    Component("dataset", "synthetic_classification", p.SyntheticClassificationParams, f"{_B}.synthetic:build_dataset", "Gaussian blobs, one per class; deterministic from the run seed."),
    Component("model", "mlp", p.MLPParams, f"{_B}.synthetic:build_mlp", "Multi-layer perceptron over flattened inputs."),
    Component("transform", "convert", p.ConvertParams, f"{_B}.transforms:build_convert", "Convert a PIL image to RGB or L (palette, RGBA, grayscale in)."),
    Component("transform", "resize", p.ResizeParams, f"{_B}.transforms:build_resize", "Resize an image (torchvision Resize)."),
    Component("transform", "center_crop", p.CropParams, f"{_B}.transforms:build_center_crop", "Crop the centre of an image."),
    Component("transform", "random_resized_crop", p.RandomResizedCropParams, f"{_B}.transforms:build_random_resized_crop", "Random crop of random size and aspect, resized (augmentation)."),
    Component("transform", "random_horizontal_flip", p.FlipParams, f"{_B}.transforms:build_random_horizontal_flip", "Flip left-right with probability p (augmentation)."),
    Component("transform", "to_tensor", NoParams, f"{_B}.transforms:build_to_tensor", "PIL image to a float tensor in [0, 1], channels first."),
    Component("transform", "normalize", p.NormalizeParams, f"{_B}.transforms:build_normalize", "Subtract mean and divide by std, per channel."),
]


@hookimpl
def register_components() -> list[Component]:
    return COMPONENTS
