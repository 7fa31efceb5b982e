"""Building a timm model (imports timm, and so torch)."""

from __future__ import annotations

from typing import Any

from pipeforge import BuildContext, PluginError

from pipeforge_timm.plugin import TimmParams


def build_model(params: TimmParams, context: BuildContext) -> Any:
    """`timm.create_model(architecture, num_classes=<the dataset's classes>, …)`."""
    import timm

    classes = context.datasets.num_classes if context.datasets is not None else None
    if not classes:
        raise PluginError("model 'timm.model' sizes its classifier to the dataset's classes, "
                          "but the dataset names no classes")
    extra: dict[str, Any] = {}
    if params.drop_path_rate is not None:
        extra["drop_path_rate"] = params.drop_path_rate
    if params.img_size is not None:
        extra["img_size"] = params.img_size
    try:
        return timm.create_model(params.architecture, pretrained=params.pretrained, num_classes=classes,
                                 in_chans=params.in_chans, drop_rate=params.drop_rate, **extra)
    except Exception as exc:  # timm's and the Hub's own errors, said once with what to do
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if params.pretrained:
            raise PluginError(
                f"model 'timm.model': the pretrained weights of {params.architecture!r} could not be loaded "
                f"({type(exc).__name__}: {why}). timm fetches them from the Hugging Face Hub or its cache "
                "($HF_HOME); put them there on a machine that can reach the Hub, or set "
                "model.pretrained = false to train from random weights") from None
        raise PluginError(f"model 'timm.model': timm could not build {params.architecture!r} "
                          f"with these params ({type(exc).__name__}: {why})") from None
