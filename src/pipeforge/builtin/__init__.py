"""pipeforge's built-in plugin: the torch catalog (every torch.optim optimizer, lr scheduler and
torch.nn loss that fits the loop, by name), accuracy, TensorBoard, vision transforms, and a
synthetic dataset with an MLP so a recipe runs with no download.

It is registered through the `pipeforge` entry-point group exactly like a third-party plugin.
Builders are named lazily ("module:function") so that discovery never imports torch.
"""

from __future__ import annotations

from pipeforge.builtin import loss_params as lp
from pipeforge.builtin import optim_params as o
from pipeforge.builtin import params as p
from pipeforge.builtin.csv_logger import CSVParams
from pipeforge.builtin.stopping import EarlyStoppingParams
from pipeforge.hookspecs import hookimpl
from pipeforge.registry import Component, NoParams

_B = "pipeforge.builtin"

COMPONENTS = [
    # torch.optim by name (optim_params.py); lbfgs is registered to say why it is refused.
    Component("optimizer", "sgd", o.SGDParams, f"{_B}.optim:build_sgd", "Stochastic gradient descent, with momentum and Nesterov (torch.optim.SGD)."),
    Component("optimizer", "adam", o.AdamParams, f"{_B}.optim:build_adam", "Adam: adaptive estimates of the gradient's moments (torch.optim.Adam)."),
    Component("optimizer", "adamw", o.AdamWParams, f"{_B}.optim:build_adamw", "Adam with decoupled weight decay (torch.optim.AdamW)."),
    Component("optimizer", "adamax", o.AdamaxParams, f"{_B}.optim:build_adamax", "Adam with the infinity norm (torch.optim.Adamax)."),
    Component("optimizer", "nadam", o.NAdamParams, f"{_B}.optim:build_nadam", "Adam with Nesterov momentum (torch.optim.NAdam)."),
    Component("optimizer", "radam", o.RAdamParams, f"{_B}.optim:build_radam", "Rectified Adam: a variance correction in place of a warm-up (torch.optim.RAdam)."),
    Component("optimizer", "rmsprop", o.RMSpropParams, f"{_B}.optim:build_rmsprop", "Steps scaled by a running average of squared gradients (torch.optim.RMSprop)."),
    Component("optimizer", "adagrad", o.AdagradParams, f"{_B}.optim:build_adagrad", "A per-parameter lr from the accumulated squared gradients (torch.optim.Adagrad)."),
    Component("optimizer", "adadelta", o.AdadeltaParams, f"{_B}.optim:build_adadelta", "Adagrad over a window of recent gradients (torch.optim.Adadelta)."),
    Component("optimizer", "adafactor", o.AdafactorParams, f"{_B}.optim:build_adafactor", "Factored second moments: little optimizer memory (torch.optim.Adafactor)."),
    Component("optimizer", "asgd", o.ASGDParams, f"{_B}.optim:build_asgd", "Averaged stochastic gradient descent (torch.optim.ASGD)."),
    Component("optimizer", "rprop", o.RpropParams, f"{_B}.optim:build_rprop", "Resilient backpropagation: steps from gradient signs, for full batches (torch.optim.Rprop)."),
    Component("optimizer", "sparse_adam", o.SparseAdamParams, f"{_B}.optim:build_sparse_adam", "Adam for models whose parameters all have sparse gradients (torch.optim.SparseAdam).",
              unchecked="it needs a model whose trainable parameters are all sparse embeddings (tested in tests/test_catalog.py)"),
    Component("optimizer", "muon", o.MuonParams, f"{_B}.optim:build_muon", "Muon for the 2-D weights, AdamW for the rest (torch.optim.Muon and AdamW)."),
    Component("optimizer", "lbfgs", o.LBFGSParams, f"{_B}.optim:build_lbfgs", "L-BFGS (torch.optim.LBFGS): refused, each of its steps needs a loss closure.",
              unchecked="registered only to refuse it with the reason at validate time"),
    # torch.optim.lr_scheduler by name; the engine adds warm-up and the step/epoch interval.
    Component("scheduler", "step_lr", o.StepLRParams, f"{_B}.optim:build_step_lr", "Decay the learning rate by gamma every step_size scheduler steps (StepLR)."),
    Component("scheduler", "multistep", o.MultiStepParams, f"{_B}.optim:build_multistep", "Decay the learning rate by gamma at each milestone (MultiStepLR)."),
    Component("scheduler", "constant", o.ConstantParams, f"{_B}.optim:build_constant", "A constant learning rate (ConstantLR), e.g. with a warm-up."),
    Component("scheduler", "linear", o.LinearDecayParams, f"{_B}.optim:build_linear", "Linear change of the learning rate, by default a decay to 0 over the run (LinearLR)."),
    Component("scheduler", "exponential", o.ExponentialParams, f"{_B}.optim:build_exponential", "Multiply the learning rate by gamma every scheduler step (ExponentialLR)."),
    Component("scheduler", "cosine", o.CosineParams, f"{_B}.optim:build_cosine", "Cosine annealing of the learning rate down to eta_min (CosineAnnealingLR)."),
    Component("scheduler", "cosine_warm_restarts", o.CosineRestartsParams, f"{_B}.optim:build_cosine_warm_restarts", "Cosine annealing restarted every t_0 × t_mult^i steps (CosineAnnealingWarmRestarts)."),
    Component("scheduler", "cyclic", o.CyclicParams, f"{_B}.optim:build_cyclic", "Cycle the learning rate between base_lr and max_lr (CyclicLR)."),
    Component("scheduler", "one_cycle", o.OneCycleParams, f"{_B}.optim:build_one_cycle", "The one-cycle policy up to max_lr and down (OneCycleLR)."),
    Component("scheduler", "polynomial", o.PolynomialParams, f"{_B}.optim:build_polynomial", "Polynomial decay of the learning rate to 0 over the run (PolynomialLR)."),
    Component("scheduler", "reduce_on_plateau", o.PlateauParams, f"{_B}.optim:build_plateau", "Reduce the learning rate when a metric stops improving (ReduceLROnPlateau; epoch interval)."),
    # torch.nn losses called as loss(outputs, targets) (loss_params.py).
    Component("loss", "cross_entropy", lp.CrossEntropyParams, f"{_B}.losses:build_cross_entropy", "Cross-entropy of class logits; targets: class indices or probabilities (CrossEntropyLoss)."),
    Component("loss", "nll", lp.NLLParams, f"{_B}.losses:build_nll", "Negative log-likelihood of log-probabilities; targets: class indices (NLLLoss)."),
    Component("loss", "bce", lp.BCEParams, f"{_B}.losses:build_bce", "Binary cross-entropy of probabilities; float targets in [0, 1] shaped as the outputs (BCELoss)."),
    Component("loss", "bce_with_logits", lp.BCEWithLogitsParams, f"{_B}.losses:build_bce_with_logits", "Binary cross-entropy of logits, e.g. multi-label; float targets in [0, 1] (BCEWithLogitsLoss)."),
    Component("loss", "mse", lp.MSEParams, f"{_B}.losses:build_mse", "Mean squared error; targets shaped as the outputs (MSELoss)."),
    Component("loss", "l1", lp.L1Params, f"{_B}.losses:build_l1", "Mean absolute error; targets shaped as the outputs (L1Loss)."),
    Component("loss", "smooth_l1", lp.SmoothL1Params, f"{_B}.losses:build_smooth_l1", "L1 with a quadratic region below beta (SmoothL1Loss)."),
    Component("loss", "huber", lp.HuberParams, f"{_B}.losses:build_huber", "Squared error below delta, linear above (HuberLoss)."),
    Component("loss", "kl_div", lp.KLDivParams, f"{_B}.losses:build_kl_div", "KL divergence of target distributions from log-probability outputs (KLDivLoss)."),
    Component("loss", "poisson_nll", lp.PoissonNLLParams, f"{_B}.losses:build_poisson_nll", "Poisson negative log-likelihood of (log-)rates; count targets (PoissonNLLLoss)."),
    Component("loss", "hinge_embedding", lp.HingeEmbeddingParams, f"{_B}.losses:build_hinge_embedding", "Hinge loss of distances; targets 1 or -1 (HingeEmbeddingLoss)."),
    Component("loss", "soft_margin", lp.SoftMarginParams, f"{_B}.losses:build_soft_margin", "Two-class logistic loss; targets 1 or -1 (SoftMarginLoss)."),
    Component("loss", "multi_margin", lp.MultiMarginParams, f"{_B}.losses:build_multi_margin", "Multi-class hinge loss of class scores; targets: class indices (MultiMarginLoss)."),
    Component("loss", "multilabel_margin", lp.MultiLabelMarginParams, f"{_B}.losses:build_multilabel_margin", "Multi-label hinge loss; targets: class indices padded with -1 (MultiLabelMarginLoss)."),
    Component("loss", "multilabel_soft_margin", lp.MultiLabelSoftMarginParams, f"{_B}.losses:build_multilabel_soft_margin", "Multi-label one-versus-all logistic loss; 0/1 targets (MultiLabelSoftMarginLoss)."),
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
