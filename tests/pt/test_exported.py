"""OnnxRuntime and OpenVino (a model's ONNX export run by onnxruntime or OpenVINO, forms optimize() weighs)
against the model they wrap: outputs, their structure, weight edits, autograd, copies, shapes, refusals;
and optimize() weighing them: one export for both, the fastest kept, what is missing or inexact named."""
import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from onebyone.errors import OneByOneError
from onebyone.torch import Pointwise
from onebyone.torch.fast import OnnxRuntime, OpenVino
from onebyone.torch.fast import exported as exported_module

pytest.importorskip("onnxscript")


@pytest.fixture(params=[OnnxRuntime, OpenVino], ids=["onnxruntime", "openvino"])
def engine(request):
    """Each engine class, skipped with the reason where it is not installed."""
    try:
        request.param.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    return request.param


@pytest.fixture
def onnxruntime_engine():
    """One engine for what the shared ``Exported`` base decides alone (staleness, the sessions it keeps): the
    engines differ only in how they compile an export, which the tests on ``engine`` cover for both."""
    try:
        OnnxRuntime.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    return OnnxRuntime


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Pointwise(8, 16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


class TwoHeads(nn.Module):
    """Two inputs (one by keyword), a non-tensor option, and a dict of a tuple out."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 3), nn.Linear(4, 3)

    def forward(self, left, right=None, scale: float = 1.0):
        return {"sum": self.a(left) + self.b(right) * scale, "parts": (self.a(left), self.b(right))}


def test_runs_the_export_with_the_models_outputs_and_follows_weight_edits(engine):
    model = small_model()
    fast = engine(model)
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
        assert len(fast._built) == 1
        model[0].weight.mul_(2)  # the session holds the old weights: the next call must export again
        model[1].running_mean.add_(1)
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
        assert fast(x).data_ptr() != fast(x).data_ptr()  # each call's output is its own tensor


@pytest.mark.parametrize("edit", ["new parameter", "data swapped", "attribute", "submodule"])
def test_an_engine_never_runs_a_stale_export(onnxruntime_engine, edit):
    """Weights set anew (not edited in place), a ``.data`` swapped in, an activation's slope or a submodule
    changed: the next call exports again and gives the model's own outputs."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LeakyReLU(0.1), nn.Conv2d(8, 4, 1)).eval()
    fast, x = onnxruntime_engine(model), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        fast(x)
        if edit == "new parameter":
            model[2].weight = nn.Parameter(torch.randn_like(model[2].weight))
        elif edit == "data swapped":
            model[2].weight.data = torch.randn_like(model[2].weight)
        elif edit == "attribute":
            model[1].negative_slope = 0.9
        else:
            model[1] = nn.Tanh()
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_keeps_the_output_structure_and_keys_sessions_on_every_argument(engine):
    model = TwoHeads().eval()
    fast = engine(model)
    left, right = torch.randn(2, 5), torch.randn(2, 4)
    with torch.no_grad():
        for scale in (1.0, 2.0, 1.0):
            got, want = fast(left, right=right, scale=scale), model(left, right=right, scale=scale)
            assert set(got) == {"sum", "parts"} and isinstance(got["parts"], tuple)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert len(fast._built) == 2  # one session per scale: the value was baked into each export
        fast(torch.randn(3, 5), right=torch.randn(3, 4))
        assert len(fast._built) == 3  # and one per shape
        torch.testing.assert_close(fast(right=right, left=left), model(left, right), rtol=1e-5, atol=1e-5)


def test_keeps_only_the_newest_sessions(onnxruntime_engine):
    fast = onnxruntime_engine(small_model(), sessions=2)
    with torch.no_grad():
        for n in (1, 2, 3):
            fast(torch.randn(n, 3, 8, 8))
    assert [k[0][1][0] for k in fast._built] == [2, 3]  # the batch sizes of the sessions kept


def test_threads_meeting_new_input_shapes_export_one_at_a_time(monkeypatch, onnxruntime_engine):
    """An export sets the process's logging, warnings filters and stdout while it runs: two threads calling
    one form with new shapes at once export in turn, each gets its own outputs, and the logging level is
    restored. (The first export waits up to a second for the second to start; one at a time, it never does.)"""
    import logging
    import threading

    real, entered, active, most = exported_module.export, threading.Event(), [], []

    def export(*a, **k):
        active.append(1)
        most.append(len(active))
        if len(most) == 1:
            entered.wait(1.0)  # the other thread's export, if it could start now
        else:
            entered.set()
        try:
            return real(*a, **k)
        finally:
            active.pop()

    monkeypatch.setattr(exported_module, "export", export)
    model, level = small_model(), logging.getLogger().level
    fast, xs, got = onnxruntime_engine(model), [torch.randn(n, 3, 8, 8) for n in (2, 3)], {}

    def call(i):
        with torch.no_grad():
            got[i] = fast(xs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == [1, 1] and logging.getLogger().level == level
    with torch.no_grad():
        for i, x in enumerate(xs):
            torch.testing.assert_close(got[i], model(x), rtol=1e-4, atol=1e-5)


def test_a_transformers_model_output_comes_back_as_its_own_class():
    T = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = T.ResNetForImageClassification(T.ResNetConfig(
        depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8, num_labels=3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = OnnxRuntime(model)(pixel_values=x), model(pixel_values=x)
    assert type(got) is type(want)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)


def test_gradients_and_inputs_it_cannot_take_run_the_model_itself(engine):
    model = small_model()
    fast = engine(model)
    x = torch.randn(2, 3, 8, 8)
    fast(x).sum().backward()  # the parameters want gradients: the model runs
    assert model[0].weight.grad is not None and fast._built is None
    model.requires_grad_(False)
    x.requires_grad_()
    fast(x).sum().backward()  # frozen weights, but a gradient wanted for the input
    assert x.grad is not None and fast._built is None
    with torch.no_grad():
        low = model.to(torch.bfloat16)(x.bfloat16())
        torch.testing.assert_close(fast(x.bfloat16()), low)  # NumPy has no bfloat16
        model.float().train()
        before = model[1].running_mean.clone()
        fast(x)  # batch statistics: the model itself, which updates its running mean
        assert not torch.equal(model[1].running_mean, before)
    assert fast._built == {}


def test_nan_in_the_inputs_reaches_the_outputs_as_in_the_model():
    """OpenVINO's fused ReLU (and every engine's int8 quantization) turns NaN into numbers: inputs holding NaN
    or inf run the model itself (the shared ``Engine`` base decides; test_int8 and test_compile check the
    int8 forms and ``Compiled``), whose outputs carry them where torch's do."""
    try:
        OpenVino.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    model, x = small_model(), torch.randn(4, 3, 8, 8)
    fast = OpenVino(model)
    bad = x.clone()
    bad[1, 2, 4, 4] = float("nan")
    with torch.no_grad():
        fast(x)  # exported and compiled
        want, got = model(bad), fast(bad)
    assert want[1].isnan().all() and torch.equal(got.isnan(), want.isnan())
    torch.testing.assert_close(got, want, equal_nan=True)


def test_copies_and_pickles_hold_only_the_model(engine):
    model = small_model()
    fast = engine(model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        fast(x)
        for other in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
            torch.testing.assert_close(other(x), model(x), rtol=1e-5, atol=1e-5)
    assert list(fast.state_dict()) == [f"model.{k}" for k in model.state_dict()]


class Branch(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x * 3  # which branch depends on the values, not the shape


class ExportsOtherwise(nn.Module):
    def forward(self, x):
        return x + 1 if torch.compiler.is_exporting() else x


def test_refuses_a_model_whose_export_would_replay_one_branch_or_differs(engine):
    with torch.no_grad(), pytest.raises(OneByOneError, match="could not export Branch on inputs of shape"):
        engine(Branch().eval())(torch.ones(2, 3))
    with torch.no_grad(), pytest.raises(OneByOneError, match=f"{engine.engine} moved the outputs by 1 "):
        engine(ExportsOtherwise().eval())(torch.ones(2, 3))


def test_an_engine_that_is_not_installed_says_what_to_install():
    from onebyone.torch.fast.exported import require_engine

    with pytest.raises(OneByOneError, match=r"Mine needs no_such_engine, onnx and onnxscript \(pip install "
                                            r"onebyone\[mine\]\): No module named 'no_such_engine'"):
        require_engine("no_such_engine", "Mine", "mine")


def test_onnxruntime_fuses_a_batch_norm_after_a_conv_without_bias(tmp_path):
    # the exporter gives a conv without bias a zero bias computed at run time (Shape, Expand, CastLike),
    # which onnxruntime does not fold: unless the exporter's optimizer ran, the batch norm stays a node
    ort = pytest.importorskip("onnxruntime")
    import onnx

    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 16, 16)
    exported = exported_module.export(model, (x,), {}, "x")
    assert not {n.op_type for n in onnx.load_from_string(exported).graph.node} & set(exported_module.RUN_TIME_CONSTANTS)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "ran.onnx")  # the graph onnxruntime runs
    ort.InferenceSession(exported, opts, providers=["CPUExecutionProvider"])
    ran = [n.op_type for n in onnx.load(str(tmp_path / "ran.onnx")).graph.node]
    assert "BatchNormalization" not in ran and ran.count("Conv") + ran.count("FusedConv") == 1, ran
    with torch.no_grad():
        torch.testing.assert_close(OnnxRuntime(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_prepare_checks_against_the_callers_outputs_and_keeps_the_session(monkeypatch, engine):
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    exports, real = [], exported_module.export
    monkeypatch.setattr(exported_module, "export", lambda *a: exports.append(a) or real(*a))
    with torch.no_grad():
        want = model(x)
        fast = engine(model)
        with pytest.raises(OneByOneError, match=f"{engine.engine} moved the outputs by 1 "):
            fast.prepare(x, want + 1)  # checked against what the caller gives, not against a fresh run
        fast.prepare(x, want)
        torch.testing.assert_close(fast(x), want, rtol=1e-5, atol=1e-5)  # the prepared session ran
    assert len(exports) == 2 and len(fast._built) == 1
    with pytest.raises(OneByOneError, match="runs the model itself on inputs"):
        fast.prepare(x.bfloat16(), want)


def test_a_float16_model_runs_within_its_own_precision():
    """float16 weights round at 1e-3: the check's tolerance grows to that (float64 is refused, named)."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).half().eval()
    fast, x = OnnxRuntime(model), torch.randn(2, 3, 8, 8).half()
    assert fast.tol >= 3.9e-3
    with torch.no_grad():
        got, want = fast(x), model(x)
    assert got.dtype == torch.float16 and (got - want).abs().max() <= fast.tol * max(1.0, float(want.abs().max()))


def test_an_engine_form_moved_to_float64_runs_its_torch_model():
    """``.to(torch.float64)`` on a kept onnxruntime form exported again in float64, and onnxruntime has no
    float64 Conv: a raw 'NotImplemented' from it. A float64 input to the float32 form blamed the export."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    fast, x = OnnxRuntime(copy.deepcopy(model)), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        fast(x)
        with pytest.raises(RuntimeError) as theirs:
            model(x.double())
        with pytest.raises(RuntimeError) as ours:  # the model's own error, as the model given raises it
            fast(x.double())
        assert str(ours.value) == str(theirs.value)
        fast.to(torch.float64)
        torch.testing.assert_close(fast(x.double()), model.double()(x.double()))


def test_an_engine_form_traces_as_its_torch_model():
    """``torch.jit.trace`` of an engine's form reached the export with traced shapes (a warning of inputs of
    shape (tensor(2), ...), or an error): a tracer records the torch model the form runs."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    fast, x = OnnxRuntime(copy.deepcopy(model)), torch.randn(2, 3, 8, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # (torch's own deprecation notice on jit.trace aside)
        traced = torch.jit.trace(fast, x)
        y = torch.randn(3, 3, 9, 9)
        torch.testing.assert_close(traced(y), model(y), rtol=1e-5, atol=1e-5)
    fast.engine = "onnxruntime int8 (QDQ)"  # an int8 engine's form: what a tracer records is said
    with torch.no_grad(), pytest.warns(UserWarning, match="a tracer records the float model this form holds"):
        torch.jit.trace(fast, x)
