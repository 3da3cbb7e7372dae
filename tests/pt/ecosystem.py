"""timm and torchvision for the tests: torchvision's wheel on our package index is a CUDA build whose compiled
operators do not load beside the pinned CPU torch, and its ``_meta_registrations`` then fails on
``torchvision::nms``. Defining the schemas of the two operators it registers fakes for (``nms``, ``qnms``)
before the first ``import torchvision`` lets every classification, segmentation and video model build; no
detection operator is ever run. Tests and benchmark scripts only: a user's matching torchvision needs none."""
import importlib

import torch

_LIB = None


def define_schemas() -> None:
    global _LIB
    if _LIB is not None:
        return
    try:
        torch.ops.torchvision.nms.default  # noqa: B018 - the real compiled ops loaded already
        return
    except (AttributeError, RuntimeError):
        pass
    _LIB = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it undefines the schemas
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def load(name: str):
    """``torchvision`` or ``timm``, importable beside the pinned CPU torch."""
    define_schemas()
    return importlib.import_module(name)
