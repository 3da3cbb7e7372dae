"""Models by their library's own names: ``timm:NAME`` and ``torchvision:NAME``, built with random weights
(nothing is downloaded), with the input size the library publishes for them."""
from __future__ import annotations

import difflib
import importlib

from ..errors import OneByOneError, reason

LIBRARIES = ("timm", "torchvision")
VIDEO_FRAMES = 16  # torchvision's video models publish a crop, not a clip length: 16 frames, as in their recipes


def _library(name: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - ImportError, or a build that does not load beside this torch
        missing = e.name.split(".")[0] if isinstance(e, ModuleNotFoundError) and e.name else None
        if missing == name:
            raise OneByOneError(f"{name} is not installed; install it (pip install {name}) to build {name}: "
                                "models") from None
        if missing:
            raise OneByOneError(f"{name} imports {missing}, which is not installed: install it to build {name}: "
                                "models") from None
        import torch

        raise OneByOneError(f"{name} is installed but does not import beside torch {torch.__version__} "
                            f"({reason(e, 160)}): install builds of {name} and of what it imports made for this "
                            f"torch to build {name}: models") from None


def _unknown(library: str, name: str, names: list) -> OneByOneError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return OneByOneError(f"{library} has no model named {name!r}{hint}")


def _timm(name: str, kwargs: dict):
    timm = _library("timm")
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    kwargs.setdefault("pretrained", False)
    model = timm.create_model(name, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return model, tuple(cfg["input_size"]) if cfg.get("input_size") else None


def _torchvision(name: str, kwargs: dict):
    tv = _library("torchvision")
    names = tv.models.list_models()
    if name not in names:
        raise _unknown("torchvision", name, names)
    kwargs.setdefault("weights", None)
    model = tv.models.get_model(name, **kwargs)
    size = None
    try:
        transforms = tv.models.get_model_weights(name).DEFAULT.transforms
        keywords = getattr(transforms, "keywords", {})
        side = keywords.get("crop_size") or keywords.get("resize_size")
        side = side[0] if isinstance(side, (list, tuple)) else side
        if side:
            video = name in tv.models.list_models(module=tv.models.video)
            size = (3, VIDEO_FRAMES, side, side) if video else (3, side, side)
    except (ValueError, AttributeError):
        pass
    return model, size


def from_library(spec: str, **kwargs):
    """``timm:NAME`` or ``torchvision:NAME`` -> (model in eval mode, default input size or None)."""
    library, _, name = spec.partition(":")
    model, size = (_timm if library == "timm" else _torchvision)(name, dict(kwargs))
    return model.eval(), size
