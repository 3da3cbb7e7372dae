"""OnnxRuntime and OpenVino (a model's ONNX export run by onnxruntime or OpenVINO, forms optimize() weighs)
against the model they wrap: outputs, their structure, weight edits, autograd, copies, shapes, refusals;
and optimize() weighing them: one export for both, the fastest kept, what is missing or inexact named."""
import copy
import pickle

import pytest
import torch
from torch import nn

from onebyone.errors import OneByOneError
from onebyone.torch import Pointwise, optimize
from onebyone.torch.fast import OnnxRuntime, OpenVino
from onebyone.torch.fast import exported as exported_module

from .cpus import WITH_ENGINES, simulate

pytest.importorskip("onnxscript")


@pytest.fixture(params=[OnnxRuntime, OpenVino], ids=["onnxruntime", "openvino"])
def engine(request):
    """Each engine class, skipped with the reason where it is not installed."""
    try:
        request.param.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    return request.param


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
def test_an_engine_never_runs_a_stale_export(engine, edit):
    """Weights set anew (not edited in place), a ``.data`` swapped in, an activation's slope or a submodule
    changed: the next call exports again and gives the model's own outputs."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LeakyReLU(0.1), nn.Conv2d(8, 4, 1)).eval()
    fast, x = engine(model), torch.randn(2, 3, 8, 8)
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


def test_keeps_only_the_newest_sessions(engine):
    fast = engine(small_model(), sessions=2)
    with torch.no_grad():
        for n in (1, 2, 3):
            fast(torch.randn(n, 3, 8, 8))
    assert [k[0][1][0] for k in fast._built] == [2, 3]  # the batch sizes of the sessions kept


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


@pytest.mark.parametrize("fastest", [OnnxRuntime, OpenVino])
def test_optimize_weighs_the_engines_by_default_from_one_export_and_keeps_the_fastest(monkeypatch, fastest):
    try:
        OnnxRuntime.require(), OpenVino.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    from onebyone.torch.fast import passes as opt_module

    real, exports = opt_module.time_models, []

    def made_fastest(models, x, **timer):  # the timings as measured, except that one engine is made fastest
        return {k: (0.0 if k == fastest.engine else v) for k, v in real(models, x, **timer).items()}

    def counted(*args):
        exports.append(args)
        return real_export(*args)

    real_export = exported_module.export
    monkeypatch.setattr(opt_module, "time_models", made_fastest)
    monkeypatch.setattr(exported_module, "export", counted)
    model, x = small_model(), torch.randn(2, 3, 10, 10)
    opt, report = optimize(model, x, passes=WITH_ENGINES)  # compile=False: the engines are weighed all the same
    assert type(opt) is fastest and opt.exports is None  # the shared export is not kept with the model
    assert len(exports) == 1  # one export served both engines
    kept = report.changed[-1]
    assert kept.startswith(f"{fastest.engine} (its ONNX export, float32 on the CPU) kept: the eager rewrite ")
    assert "onnxruntime" in kept and "OpenVINO" in kept and " ms" in kept  # each form's time
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-4, atol=1e-4)


def test_optimize_names_an_engine_that_is_missing_or_moves_the_outputs(monkeypatch):
    pytest.importorskip("onnxruntime")

    def missing():
        raise OneByOneError("OpenVino needs openvino, onnx and onnxscript (pip install onebyone[openvino])")

    def off_by_one(self, onnx):  # an engine whose outputs are wrong
        fn, n = real_compile(self, onnx)
        return (lambda arrays: [a + 1 for a in fn(arrays)]), n

    real_compile = OnnxRuntime.compile
    monkeypatch.setattr(OpenVino, "require", staticmethod(missing))
    monkeypatch.setattr(OnnxRuntime, "compile", off_by_one)
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    opt, report = optimize(model, x, passes=WITH_ENGINES)  # never an error: the eager rewrite is kept
    assert not isinstance(opt, (OnnxRuntime, OpenVino))
    skipped = dict(report.skipped)
    assert skipped["OpenVINO"].startswith("not weighed: OpenVino needs openvino") and "onebyone[openvino]" in \
        skipped["OpenVINO"]
    assert skipped["onnxruntime"].startswith("OneByOneError: onnxruntime moved the outputs by 1 ")
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:optimize. bfloat16 was timed and ran no faster")  # tiny model
def test_optimize_in_bfloat16_says_the_engines_were_not_weighed(monkeypatch):
    simulate(monkeypatch, "AVX-512 with bfloat16")  # skips where this CPU has no bfloat16 products
    low, report = optimize(small_model(), torch.randn(2, 3, 8, 8), dtype=torch.bfloat16, passes=WITH_ENGINES)
    assert not isinstance(low, (OnnxRuntime, OpenVino))
    assert "onnxruntime and OpenVINO were not weighed: they run float32 only here" in report.notes


def test_the_analyzer_counts_the_wrapped_model():
    """onnxruntime and compiled code make no torch calls the analyzer could see: it must count the model."""
    from onebyone import analyze
    from onebyone.torch.fast import Compiled

    model = small_model()
    want = analyze(model, input_size=(3, 8, 8))
    for wrapped in (OnnxRuntime(model), OpenVino(model), Compiled(model)):
        got = analyze(wrapped, input_size=(3, 8, 8))
        assert (got.macs, got.params) == (want.macs, want.params) and got.macs > 0


def test_an_engine_that_is_not_installed_says_what_to_install():
    from onebyone.torch.fast.exported import require_engine

    with pytest.raises(OneByOneError, match=r"Mine needs no_such_engine, onnx and onnxscript \(pip install "
                                            r"onebyone\[mine\]\): No module named 'no_such_engine'"):
        require_engine("no_such_engine", "Mine", "mine")


def test_an_export_that_fails_is_tried_once_and_named_for_both_engines(monkeypatch):
    try:
        OnnxRuntime.require(), OpenVino.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    tried, real = [], exported_module.export

    def counted(*args):
        tried.append(args)
        return real(*args)

    monkeypatch.setattr(exported_module, "export", counted)
    model, x = Branch().eval(), torch.ones(2, 3)
    opt, report = optimize(model, x, passes=WITH_ENGINES)
    skipped = dict(report.skipped)
    assert len(tried) == 1 and skipped["onnxruntime"] == skipped["OpenVINO"]
    assert "could not export Branch" in skipped["OpenVINO"] and not isinstance(opt, (OnnxRuntime, OpenVino))


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


@pytest.mark.parametrize("behind, changed", [(1.5, False), (1.05, False), (1.05, True)])
def test_the_eager_rewrite_is_tuned_only_where_it_can_still_win(monkeypatch, behind, changed):
    """Tuning kernels takes seconds on a large model and gains a few percent: where the engines' forms lead
    the untuned rewrite by more than that, it is skipped; where a kernel changes, the close ones race again."""
    pytest.importorskip("onnxruntime")
    from onebyone.torch.fast import passes as O

    races, tuned = [], []

    def timed(models, x, **timer):  # the engines at 1 ms, the untuned rewrite `behind` that, the model given 2 ms
        races.append(list(models))
        ms = {O.EAGER: behind if not tuned else 0.9, O.GIVEN: 2.0}
        return {k: ms.get(k, 1.0) * 1e-3 for k in models}

    monkeypatch.setattr(O, "time_models", timed)
    monkeypatch.setattr(O, "choose_kernels", lambda model, x: tuned.append(model) or changed)
    opt, report = optimize(small_model(), torch.randn(2, 3, 8, 8), channels_last=False,
                           passes=WITH_ENGINES + ["keep_faster"])
    if behind > O.TUNE_REACH:
        assert tuned == [] and isinstance(opt, OnnxRuntime) and report.layers == []
        assert f"kernels not tuned: the eager rewrite ran {behind:.2f}x the fastest form's time untuned" in \
            " ".join(report.notes)
        assert len(races) == 1
    elif not changed:  # tuned, nothing changed: the first race stands
        assert len(tuned) == 1 and len(races) == 1 and isinstance(opt, OnnxRuntime)
    else:  # tuned, a kernel changed: the rewrite and the engines within reach race again, and it wins
        assert len(tuned) == 1 and races[1] == [k for k in races[0] if k != O.GIVEN]  # 2 ms: out of reach
        assert not isinstance(opt, OnnxRuntime) and any("kept the eager rewrite" in n for n in report.notes)


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


def test_onnxruntime_threads_are_checked_and_a_short_call_weighs_one_thread_too(monkeypatch):
    pytest.importorskip("onnxruntime")
    from onebyone.torch.fast import passes as O

    with pytest.raises(OneByOneError, match=r"threads must be None or an int >= 1, got 0"):
        OnnxRuntime(small_model(), threads=0)
    monkeypatch.setattr(O, "ONE_THREAD_BELOW", 1.0)  # "short" whatever the machine's load: the rule, not a timing
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, report = optimize(small_model(), torch.randn(2, 3, 8, 8), passes=WITH_ENGINES)
    finally:
        torch.set_num_threads(threads)
    timed = next(n for n in [*report.changed, *report.notes] if "onnxruntime, one thread" in n)
    assert " ms" in timed  # weighed and timed beside the others (a call of this model takes well under 2 ms)


@pytest.mark.parametrize("faster", ["channels_last", "as given"])
def test_the_layout_is_raced_beside_the_engines_not_alone(monkeypatch, faster):
    """One race for both layouts of the rewrite and the engines' forms (a separate race of the layouts took
    up to a second on a zoo model): the faster layout goes on, the other leaves, the report says which."""
    pytest.importorskip("onnxruntime")
    from onebyone.torch.fast import passes as O
    from onebyone.torch.fast.wrappers import ChannelsLast

    races = []

    def timed(models, x, **timer):  # the engines at 3 ms, the rewrite at 1 ms in `faster`'s layout, 2 in the other
        races.append(list(models))
        ms = {O.EAGER: 2.0 if faster == "channels_last" else 1.0, O.EAGER_CL: 1.0 if faster == "channels_last" else 2.0,
              O.GIVEN: 4.0}
        return {k: ms.get(k, 3.0) * 1e-3 for k in models}

    monkeypatch.setattr(O, "time_models", timed)
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    opt, report = optimize(model, x, passes=WITH_ENGINES + ["channels_last", "keep_faster"])
    assert len(races) == 1 and {O.EAGER, O.EAGER_CL, O.GIVEN, "onnxruntime"} <= set(races[0])  # one race for all
    assert isinstance(opt, ChannelsLast) == (faster == "channels_last")
    said = " ".join(report.notes)
    if faster == "channels_last":
        assert "model and input moved to channels_last" in report.changed and "channels_last ran faster: 1 " in said
    else:
        assert "channels_last was timed and ran slower: 2 against 1 ms a call" in said
    assert "kept the eager rewrite" in said and "on the example: 1 ms a call against 4" in said
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-5, atol=1e-5)


def test_an_engine_kept_by_optimize_runs_without_no_grad(monkeypatch):
    """optimize()'s forms hold weights that want no gradient: a plain call runs the engine that won, not
    the model behind it (which an engine runs only where a gradient is wanted)."""
    pytest.importorskip("onnxruntime")
    from onebyone.torch.fast import passes as O

    monkeypatch.setattr(O, "time_models", lambda models, x, **timer: {k: (0.5 if k == "onnxruntime" else 1.0) * 1e-3
                                                                       for k in models})
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    opt, _ = optimize(model, x, passes=WITH_ENGINES)
    assert isinstance(opt, OnnxRuntime)
    ran = []
    opt.model.register_forward_hook(lambda *a: ran.append(1))
    y = opt(x)  # grad mode on
    assert ran == [] and y.grad_fn is None
    torch.testing.assert_close(y, model(x).detach(), rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # grad mode already off: the engine, as under no_grad
        torch.testing.assert_close(opt(x), y)
    assert ran == []
    opt(x.requires_grad_()).sum().backward()  # a gradient wanted: the model behind it runs
    assert ran == [1] and x.grad is not None


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
