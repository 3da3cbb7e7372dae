"""``capture.watch``: one run hands every module call and torch function to every listener; what a listener
reads in its own hooks is not the model's; hooks are gone however the run ends."""
import pytest
import torch
from torch import nn

from onebyone.torch.capture import Listener, calls_of, watch
from onebyone.torch.record import record_calls


class Log(Listener):
    def __init__(self):
        self.events = []

    def pre(self, m, args, kwargs):
        self.events.append(("pre", type(m).__name__, tuple(args[0].shape)))  # reads a shape: not the model's

    def post(self, m, args, kwargs, out):
        self.events.append(("post", type(m).__name__))

    def before(self, func, args, kwargs):
        self.events.append(("before", getattr(func, "__name__", "")))

    def after(self, func, args, kwargs, out):
        self.events.append(("after", getattr(func, "__name__", "")))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) + x.sum()


def test_one_run_feeds_every_listener_the_same_events_in_order():
    model, x = Net(), torch.randn(1, 2, 4, 4)
    one, two = Log(), Log()
    out = watch(model, x, one, two)
    assert torch.equal(out, model(x)) and one.events == two.events
    mods = [e for e in one.events if e[0] in ("pre", "post")]
    assert mods[:2] == [("pre", "Net", (1, 2, 4, 4)), ("pre", "Conv2d", (1, 2, 4, 4))] and mods[-1] == ("post", "Net")
    funcs = [e[1] for e in one.events if e[0] == "before"]
    assert "relu" in funcs and "sum" in funcs and "__get__" not in funcs  # the listeners' .shape reads are hidden


def test_hooks_are_removed_even_when_the_model_fails():
    model = Net()
    with pytest.raises(RuntimeError):
        watch(model, torch.randn(1, 5, 4, 4), Log())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_calls_of_and_the_record_read_the_same_run():
    model, x = Net(), torch.randn(2, 2, 3, 3)
    first, counts = calls_of(model, x, [model.a, model.b])
    assert counts == {model.a: 1, model.b: 1} and torch.equal(first[model.a][0][0], x)
    rec = record_calls(model, x)
    assert [c.name for c in rec.calls] == ["a", "b"] and rec.calls[1].input_shape == tuple(first[model.b][0][0].shape)


def test_a_run_that_reads_no_functions_installs_no_function_mode():
    """``calls_of`` reads module calls only: the fast layers see no mode and stay on their fast path."""
    from onebyone.torch.fast import private

    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(private.function_mode_on())
            return x

    model = nn.Sequential(Probe())
    calls_of(model, torch.ones(1), [model[0]])
    watch(model, torch.ones(1), Log())
    assert seen == [False, True]


class GcSpy(nn.Module):
    def __init__(self, fail=False):
        super().__init__()
        self.conv, self.bn, self.fail, self.gc_during = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), fail, []

    def forward(self, x):
        import gc

        self.gc_during.append(gc.isenabled())
        if self.fail and len(self.gc_during) > 1:
            raise ValueError("a model that fails during the rewrite")
        return self.bn(self.conv(x))


@pytest.mark.parametrize("enabled", [True, False])
def test_rewrites_pause_the_garbage_collector_and_restore_it_however_they_end(enabled):
    import gc

    from onebyone import OneByOneError
    from onebyone.torch import fold_batchnorm

    (gc.enable if enabled else gc.disable)()
    try:
        model = GcSpy().eval()
        fold_batchnorm(model, input_size=(2, 3, 3))
        assert model.gc_during and not any(model.gc_during) and gc.isenabled() == enabled
        with pytest.raises((OneByOneError, ValueError)):
            fold_batchnorm(GcSpy(fail=True).eval(), input_size=(2, 3, 3))
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
