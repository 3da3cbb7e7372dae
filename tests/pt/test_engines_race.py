"""optimize()'s race: the engines (onnxruntime, OpenVINO) weighed beside the eager rewrite from one export,
the fastest kept, each form that fails or moves the outputs named; the layout and the kernels decided in
the same race."""
import contextlib
import warnings

import pytest
import torch

from onebyone.errors import OneByOneError
from onebyone.torch import optimize
from onebyone.torch.fast import OnnxRuntime, OpenVino
from onebyone.torch.fast import exported as exported_module

from .cpus import WITH_ENGINES, simulate
from .test_exported import Branch, small_model  # noqa: F401


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
def test_optimize_in_bfloat16_weighs_openvinos_bfloat16_and_says_onnxruntime_was_not(monkeypatch):
    simulate(monkeypatch, "AVX-512 with bfloat16")  # skips where this CPU has no bfloat16 products
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    low, report = optimize(model, x, dtype=torch.bfloat16, passes=WITH_ENGINES)
    assert not isinstance(low, OnnxRuntime) and "onnxruntime was not weighed: it runs float32 only here" in report.notes
    said = " ".join(report.changed + report.notes + [n for n, _ in report.skipped])
    assert "OpenVINO bfloat16" in said  # raced (kept or timed), or named with why it was not
    assert not isinstance(low, OpenVino) or low.precision == "bf16"
    with torch.no_grad():
        assert (low(x) - model(x)).abs().max() <= 2e-2 * max(1.0, float(model(x).abs().max()))



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


def _made_fastest(monkeypatch, fastest: str) -> None:
    """The race's timings made up: ``fastest`` (a label) wins (onnxruntime installed, or the test skips)."""
    try:
        OnnxRuntime.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    from onebyone.torch.fast import passes as O

    monkeypatch.setattr(O, "time_models", lambda models, x, **timer: {k: 0.5e-3 if k == fastest else 1e-3
                                                                      for k in models})


@pytest.mark.parametrize("fastest", ["onnxruntime", "the eager rewrite"])
def test_the_report_lists_as_changes_only_what_runs_in_the_form_kept(monkeypatch, fastest):
    """An engine runs the export of the exact rewrite (the BatchNorm folded), not the eager rewrite's fused
    ConvAct layers: those are set aside in a note, the fold stays listed; where the eager rewrite wins, both."""
    _made_fastest(monkeypatch, fastest)
    model, x = small_model(), torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.5, 2)
    opt, report = optimize(model, x, passes=WITH_ENGINES)
    changed = "\n".join(report.changed)
    assert "BatchNorm" in changed  # folded: in the export too
    fused = [n for n in report.notes if "change(s) of the eager rewrite were made and timed, and are not in" in n]
    if fastest == "onnxruntime":
        assert type(opt) is OnnxRuntime and "ConvAct" not in changed
        assert len(fused) == 1 and "ConvAct" in fused[0] and fused[0].split(" change")[0] != "0"
    else:
        assert "ConvAct" in changed and not fused
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.parametrize("fastest", ["onnxruntime", "the model given"])
def test_the_reports_params_after_are_those_of_the_model_returned(monkeypatch, fastest):
    """The eager rewrite packs a weight-normed conv's computed weight (weight_g and weight_v gone: 8 fewer
    parameters); where an engine's form of the exact rewrite, or the model given, is returned instead, the
    report counts that model, as analyze does."""
    from onebyone import analyze

    _made_fastest(monkeypatch, fastest)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Conv2d(3, 8, 1)), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    eager, _ = optimize(model, x, passes=["conv_acts", "check"])
    assert analyze(eager, example=x).params == 24 + 8 + 36  # (the eager rewrite: g and v as one weight)
    with contextlib.ExitStack() as said:
        if fastest == "the model given":
            said.enter_context(pytest.warns(UserWarning, match="the model given is returned unchanged"))
        opt, report = optimize(model, x, passes=["conv_acts", "check", "engines", "keep_faster"])
    assert type(opt) is (OnnxRuntime if fastest == "onnxruntime" else torch.nn.Sequential)
    assert report.params_before == report.params_after == analyze(opt, example=x).params == 8 + 24 + 8 + 36


def test_in_bfloat16_an_engine_kept_is_what_the_report_and_warnings_describe(monkeypatch):
    """OpenVINO's bfloat16 kept: the report gave the eager rewrite's error as the model's, and a warning said
    bfloat16 ran no faster than float32 (the eager rewrite did; the model returned ran 3x faster)."""
    simulate(monkeypatch, "AVX-512 with bfloat16")
    try:
        OpenVino.require()
    except OneByOneError as e:
        pytest.skip(str(e))
    from onebyone.torch.fast import passes as opt_module

    real = opt_module.time_models

    def timed(models, x, **timer):  # the eager rewrite slower in bfloat16 than float32, OpenVINO the fastest
        if set(models) == {"float32", "bfloat16"}:
            return {"float32": 1.0, "bfloat16": 2.0}
        return {k: (0.0 if k.startswith("OpenVINO") else v) for k, v in real(models, x, **timer).items()}

    monkeypatch.setattr(opt_module, "time_models", timed)
    model, x = small_model(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        low, report = optimize(model, x, dtype=torch.bfloat16, passes=WITH_ENGINES)
    assert isinstance(low, OpenVino) and report.precision["form"].startswith("OpenVINO")
    assert not any("ran no faster in bfloat16" in str(w.message) for w in caught)
    with torch.no_grad():
        want, got = model(x), low(x)
    assert report.precision["max_abs_diff"] == pytest.approx(float((got - want).abs().max()), rel=1e-3, abs=1e-6)
