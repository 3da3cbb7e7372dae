"""A rewritten model exports with torch.onnx.export and runs in onnxruntime with the same outputs."""
import numpy as np
import pytest
import torch
from torch import nn

from onebyone.torch import convolutionalize, fold_batchnorm

from .cpus import REWRITES

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def export_and_run(model, x, tmp_path):
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, (x,), path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_convolutionalized_model_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 16),
                          nn.ReLU(), nn.Linear(16, 10)).eval()
    conv, _ = convolutionalize(model, (1, 8, 8))
    x = torch.randn(1, 1, 20, 16)
    with torch.no_grad():
        ref = conv(x).numpy()
    got = export_and_run(conv, x, tmp_path)
    assert got.shape == (1, 10, 7, 5) and np.abs(got - ref).max() < 1e-5


def test_folded_model_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.5, 2)
    folded, _ = fold_batchnorm(model, input_size=(3, 10, 10))
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(export_and_run(folded, x, tmp_path) - ref).max() < 1e-5


def test_optimized_model_in_onnxruntime(tmp_path):
    """ConvAct and FusedPointwiseChain export their plain path (oneDNN calls are for eager runs)."""
    from onebyone.torch import ConvAct, FusedPointwiseChain, Pointwise, optimize

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU6(),
        Pointwise(16, 32),
        nn.ReLU(),
        Pointwise(32, 8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=8),
        nn.ReLU(),
    ).eval()
    x = torch.randn(2, 3, 12, 12)
    opt, _ = optimize(model, x, channels_last=True, passes=REWRITES)
    kinds = {type(m) for m in opt.modules()}
    assert ConvAct in kinds and FusedPointwiseChain in kinds
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(export_and_run(opt, x, tmp_path) - ref).max() < 1e-5
