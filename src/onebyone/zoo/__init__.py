"""The model zoo: a decorator registry, ``create_model(name, **kwargs)`` and ``list_models(pattern)``.

Every model is built from ``onebyone.torch.Pointwise`` where its architecture has a 1x1 conv.
Importing this module imports torch.

>>> "mobilenet_v1" in list_models("mobilenet*")
True
"""
from . import googlenet, mobilenet, nin, pointnet, squeezenet  # noqa: F401  (each registers its family)
from .registry import ModelInfo, create_model, from_spec, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "from_spec", "list_models", "model_info", "register_model"]
