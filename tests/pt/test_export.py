"""Models built from Pointwise export with dynamic height and width (torch.export and the dynamo ONNX
exporter) and run at two sizes with the eager outputs: the layer holds no per-shape state."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.export import Dim

from onebyone.torch import Pointwise, convolutionalize


def pointwise_model():
    torch.manual_seed(0)
    return nn.Sequential(Pointwise(3, 16), nn.ReLU(), Pointwise(16, 16, groups=4), nn.ReLU(), Pointwise(16, 5)).eval()


def classifier():
    """A window classifier with a Flatten -> Linear head, made to slide by convolutionalize."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), Pointwise(8, 8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    conv, _ = convolutionalize(model, (3, 8, 8))
    return conv


MODELS = {"pointwise": (pointwise_model, (3, 11, 10), (3, 20, 13)),
          "convolutionalized": (classifier, (3, 12, 10), (3, 24, 18))}
DYNAMIC = {"x": {2: Dim("h", min=10, max=512), 3: Dim("w", min=10, max=512)}}


class Wrap(nn.Module):  # names the input "x" for dynamic_shapes
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_export_with_dynamic_height_and_width(name):
    make, small, large = MODELS[name]
    model = Wrap(make()).eval()
    ep = torch.export.export(model, (torch.randn(2, *small),), dynamic_shapes=DYNAMIC)
    for size in (small, large):
        x = torch.randn(2, *size)
        with torch.no_grad():
            want = model(x)
        got = ep.module()(x)
        assert got.shape == want.shape and (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_dynamo_export_with_dynamic_height_and_width(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    make, small, large = MODELS[name]
    model = Wrap(make()).eval()
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, (torch.randn(2, *small),), path, dynamo=True, dynamic_shapes=DYNAMIC)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for size in (small, large):
        x = torch.randn(2, *size)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
