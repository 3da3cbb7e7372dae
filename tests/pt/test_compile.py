"""torch.compile around our fused modules: a FusedPointwiseChain is one opaque operator that Inductor
schedules among its own kernels (and plain ops when exported or differentiated); ``Compiled`` and
``optimize(compile=True)`` keep the outputs, never run stale weights, and fall back when compiling fails."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebyone.torch import FusedPointwiseChain, Pointwise, SharedMLP, optimize
from onebyone.torch.fast import Compiled

from .cpus import REAL, REWRITES, WITH_ENGINES

OP = "onebyone.pointwise_chain.default"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Dynamo keeps compiled code per function (every chain shares one forward): start each test clean."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def chain(channel_dim=1, pool=None):
    torch.manual_seed(0)
    mlp = SharedMLP((5, 16, 8), pool=pool, channel_dim=channel_dim).eval()
    return FusedPointwiseChain.from_shared_mlp(mlp, tile=24), mlp


def graph_targets(model, x):
    """The call_function targets of the one graph dynamo hands a backend (fullgraph: no graph break)."""
    seen = []

    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(x)
    return seen


CASES = {"channels first": (1, None, (2, 5, 7, 9)), "pooled": (1, "max", (3, 5, 40)),
         "channels last": (-1, None, (2, 11, 5)), "channels last, mean": (-1, "avg", (3, 13, 5))}


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Pointwise(8, 16), nn.ReLU(), Pointwise(16, 8),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_compiled_follows_weight_edits_autograd_and_copies():
    model = small_model()
    x = torch.randn(2, 3, 10, 10)
    comp = Compiled(model)
    with torch.no_grad():
        torch.testing.assert_close(comp(x), model(x), rtol=1e-5, atol=1e-5)
        model[0].weight.mul_(2)  # frozen into the compiled code: the next call must compile again
        model[8].bias.add_(1)
        torch.testing.assert_close(comp(x), model(x), rtol=1e-5, atol=1e-5)
        bad = x.clone()
        bad[1, 0, 2, 2] = float("nan")  # Inductor's frozen conv + ReLU (oneDNN) would turn it into a number:
        torch.testing.assert_close(comp(bad), model(bad), equal_nan=True)  # the model itself runs
        assert comp(bad)[1].isnan().all()
    y = comp(x.requires_grad_())  # gradients wanted: the model itself runs
    y.sum().backward()
    assert x.grad is not None and model[0].weight.grad is not None
    for other in (copy.deepcopy(comp), pickle.loads(pickle.dumps(comp))):
        with torch.no_grad():
            torch.testing.assert_close(other(x), comp(x), rtol=1e-5, atol=1e-5)
    assert list(comp.state_dict()) == [f"model.{k}" for k in model.state_dict()]  # only the model's own weights


def test_frozen_weights_compile_once_for_calls_with_and_without_no_grad(monkeypatch):
    """optimize() returns weights that want no gradient and races its forms under no_grad: a later plain
    call must reuse that code, not compile again (minutes on a large model) because grad mode is on."""
    from onebyone.torch.fast import compiled

    built = []
    monkeypatch.setattr(compiled, "_inductor", lambda gm, xs: built.append(gm) or compiled.private.compile_fx(gm, xs))
    model, x = small_model().requires_grad_(False), torch.randn(2, 3, 10, 10)
    comp = Compiled(model)
    with torch.no_grad():
        want = comp(x)
    got = comp(x)  # grad mode on, nothing wants a gradient
    assert len(built) == 1 and got.grad_fn is None
    torch.testing.assert_close(got, want)


def test_many_compiled_models_of_one_class_each_compile(monkeypatch):
    """Dynamo's cache is per code object, and every instance of a class shares its forward's: past its
    recompile limit (8) a later Compiled used to run eagerly (the bench's squeezenets did); and an edit's
    recompile used to reset every compiled function in the process."""
    from onebyone.torch.fast import compiled

    built = []
    monkeypatch.setattr(compiled, "_inductor", lambda gm, xs: built.append(gm) or compiled.private.compile_fx(gm, xs))
    x = torch.randn(2, 3, 10, 10)
    comps = [Compiled(small_model()) for _ in range(torch._dynamo.config.recompile_limit + 3)]
    with torch.no_grad():
        for comp in comps:
            torch.testing.assert_close(comp(x), comp.model(x), rtol=1e-5, atol=1e-5)
        assert len(built) == len(comps)  # each one compiled, none left to run eagerly
        comps[0].model[0].weight.mul_(2)
        torch.testing.assert_close(comps[0](x), comps[0].model(x), rtol=1e-5, atol=1e-5)
        for comp in comps[1:]:
            comp(x)
    assert len(built) == len(comps) + 1  # the edited one compiled again; the others kept their code


def test_optimize_with_compile_keeps_outputs_and_says_what_it_chose():
    model = small_model()
    x = torch.randn(4, 3, 16, 16)
    opt, report = optimize(model, x, compile=True, passes=WITH_ENGINES)
    said = [c for c in report.changed if " kept: " in c] + [n for n in report.notes if "engines' forms" in n]
    assert len(said) == 1 and " ms " in said[0]  # kept or not, with the times it measured
    assert isinstance(opt, Compiled) == said[0].startswith("torch.compile")
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-4, atol=1e-4)


def test_optimize_names_a_form_that_fails_to_compile_and_keeps_one_that_works(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    model = small_model()
    x = torch.randn(2, 3, 8, 8)
    opt, report = optimize(model, x, compile=True, passes=WITH_ENGINES)
    assert not isinstance(opt, Compiled)
    assert ("torch.compile", "RuntimeError: no C++ compiler found") in report.skipped
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-4, atol=1e-4)


def test_compiling_an_optimized_model_needs_no_graph_break():
    """ConvAct, ChannelsLast and the chains trace whole (fullgraph=True raises at a graph break)."""
    model = small_model()
    x = torch.randn(2, 3, 10, 10)
    opt, _ = optimize(model, x, channels_last=True, passes=REWRITES)
    with torch.no_grad():
        assert OP in graph_targets(opt, x)


def test_compiled_leaves_inductor_config_as_it_found_it():
    import torch._inductor.config as inductor

    inner = Compiled(small_model())
    outer = Compiled(nn.Sequential(inner))
    with torch.no_grad():
        outer(torch.randn(1, 3, 8, 8))
    assert inductor.freezing is False


def test_a_compiled_call_does_not_freeze_what_another_thread_compiles():
    """Compiled sets Inductor's freezing around each call; a plain torch.compile in another thread meanwhile
    must not freeze its weights (an in-place edit would go unseen), nor may the threads' restores mix."""
    import threading

    inside, done = threading.Event(), threading.Event()

    @torch._dynamo.disable
    def pause(x):  # runs eagerly between two compiled graphs of the Compiled call
        inside.set()
        assert done.wait(60)
        return x

    class Pausing(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(pause(self.lin(x)))

    comp, x = Compiled(Pausing().eval()), torch.randn(2, 4)

    def run():
        with torch.no_grad():
            comp(x)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert inside.wait(60)  # the other thread is inside its Compiled call
        other = nn.Linear(4, 4).eval()
        with torch.no_grad():
            plain = torch.compile(other)
            plain(x)
            other.weight.mul_(2)  # not frozen: the compiled code reads the weight as it is now
            torch.testing.assert_close(plain(x), other(x))
    finally:
        done.set()
        worker.join(60)


def test_each_thread_gets_back_its_own_freezing_setting():
    import threading

    import torch._inductor.config as inductor

    from onebyone.torch.fast.compiled import _freezing

    entered, leave, seen = threading.Event(), threading.Event(), []

    def other():  # enters after this thread, leaves after it
        with _freezing():
            entered.set()
            leave.wait(60)
        seen.append(inductor.freezing)

    with inductor.patch(freezing=True):  # this thread's own setting
        mine = _freezing()
        mine.__enter__()
        worker = threading.Thread(target=other)
        worker.start()
        assert entered.wait(60)
        mine.__exit__(None, None, None)
        assert inductor.freezing is True  # a stack shared between threads handed back the other's value
        leave.set()
        worker.join(60)
    assert seen == [False]


@pytest.mark.skipif(not REAL.bf16, reason=f"this CPU has no bfloat16 products ({REAL.describe()})")
@pytest.mark.filterwarnings("ignore:optimize. bfloat16 was timed and ran no faster")  # tiny model
def test_optimize_in_bfloat16_with_compile_keeps_the_callers_dtype_and_tolerance():
    model = small_model()
    x = torch.randn(4, 3, 16, 16)
    opt, report = optimize(model, x, dtype=torch.bfloat16, compile=True, passes=WITH_ENGINES)
    with torch.no_grad():
        y, ref = opt(x), model(x)
    assert y.dtype == torch.float32 and report.precision["dtype"] == "bfloat16"
    assert float((y - ref).abs().max()) <= report.precision["tolerance"] * float(ref.abs().max())


class Padded(nn.Module):
    """TensorFlow-style padding before each conv (as Hugging Face's MobileNets pad), and pads that must stay."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)
        self.c, self.d = nn.Conv2d(8, 8, 3, stride=2, groups=8), nn.Conv2d(8, 4, 3, padding=1)
        self.zero = nn.ZeroPad2d(2)

    def forward(self, x):
        x = self.a(F.pad(x, (1, 1, 1, 1)))  # symmetric: folds into a's padding
        x = self.b(F.pad(x, (0, 0, 0, 0), "constant", 0.0))  # a copy of x: folds away
        x = self.c(F.pad(x, (0, 1, 0, 1)))  # one-sided: stays
        y = F.pad(x, (1, 1, 1, 1), mode="reflect")  # not zeros: stays
        x = self.d(self.zero(x)) + self.d(y)[..., :1, :1].mean()  # ZeroPad2d folds (padding 1 + 2)
        p = F.pad(x, (1, 1, 1, 1))  # two readers: stays
        return p * p.mean()


def test_compile_runs_an_empty_or_integer_input_as_the_plain_layers_do():
    fused, mlp = chain(1, None)
    with torch.no_grad():
        assert OP not in graph_targets(fused, torch.randn(0, 5, 4))  # nothing to tile: the plain ops
        empty = torch.compile(fused, backend=lambda gm, _: gm.forward, dynamic=False)(torch.randn(0, 5, 4))
    assert empty.shape == mlp(torch.randn(0, 5, 4)).shape == (0, 8, 4)
