"""timm and torchvision for the tests: torchvision's wheel on our package index is a CUDA build whose compiled
operators do not load beside the pinned CPU torch, and its ``_meta_registrations`` then fails on
``torchvision::nms``. Defining the schemas of the two operators it registers fakes for (``nms``, ``qnms``)
before the first ``import torchvision`` lets every classification, segmentation and video model build; no
detection operator is ever run. Tests and benchmark scripts only: a user's matching torchvision needs none."""
import importlib
import re

import torch
from torch import nn

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


def randomize_norms(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from (0, 1), so a fold that did nothing cannot look exact."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
            if isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor):
                mean.copy_(torch.randn(mean.shape, generator=g) * 0.5)
                var.copy_(torch.rand(var.shape, generator=g) * 2 + 0.5)
                for v in (getattr(m, "weight", None), getattr(m, "bias", None)):
                    if isinstance(v, torch.Tensor) and v.shape == mean.shape:
                        v.copy_(torch.randn(v.shape, generator=g) * 0.5 + (1.0 if v is m.weight else 0.0))
    return model.eval()


def norm_sites(model: nn.Module, x) -> list:
    """Paths of the modules that hold running statistics and run on ``x``: every norm a fold must account for."""
    called, hooks = set(), []
    for m in model.modules():
        if isinstance(getattr(m, "running_mean", None), torch.Tensor):
            hooks.append(m.register_forward_pre_hook(lambda m, a: called.add(id(m))))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [n for n, m in model.named_modules() if id(m) in called]


def silent_sites(report, sites) -> list:
    """The sites (module paths) that ``report`` neither names in ``changed`` nor lists in ``skipped``: a fold
    names ``conv + bn``, a merge the paths it takes in; timm's ConvNormAct folds are named by their ``.bn``."""
    said = set(re.split(r"[\s:+,()`]+", " ".join(report.changed)))
    skipped = {n for n, _ in report.skipped}
    return [s for s in sites if s not in skipped and s not in said and s + ".bn" not in said]
