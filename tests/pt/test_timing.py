"""The interleaved timer optimize() chooses kernels with and the bench compares contenders with: the
default kept unless clearly beaten, no mode or switch between engines swaying it (fake clocks)."""
import pytest
import torch

from onebyone import OneByOneError
from onebyone.torch.fast import timing


def test_kernel_choice_keeps_the_default_unless_another_is_clearly_faster(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def kernel(cost, name, calls):
        def run():
            clock[0] += cost
            calls.append(name)
        run.__name__ = name
        return run

    calls = []
    default, close, fast = (
        kernel(1e-4, "default", calls),
        kernel(0.95e-4, "close", calls),
        kernel(0.5e-4, "fast", calls),
    )
    assert timing.fastest({"default": default, "close": close}) == "default"  # 5% faster: within the 10% margin
    assert timing.fastest({"default": default, "close": close, "fast": fast}) == "fast"
    assert calls.count("default") > 15 * 10  # a 0.1 ms kernel is timed in blocks of ~1 ms, over many rounds

    def broken():
        raise RuntimeError("no kernel for this dtype")
    assert timing.fastest({"broken": broken, "close": close}) == "close"  # a candidate that raises drops out
    with pytest.raises(OneByOneError, match="no kernel among"):
        timing.fastest({"broken": broken})


def test_kernel_choice_is_not_swayed_by_a_mode_watching_each_torch_call(monkeypatch):
    # a kernel timed under a __torch_function__ mode would pay the mode's cost per torch call, which would
    # favour the kernels that make fewer calls
    from torch.overrides import TorchFunctionMode

    clock, x = [0.0], torch.ones(2)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            clock[0] += 1e-4  # what watching costs per call
            return func(*args, **(kwargs or {}))

    def one_call():
        clock[0] += 1e-4
        return x + 1

    def five_calls():
        clock[0] += 0.5e-4
        return [x + 1 for _ in range(5)]

    with Watch():
        assert timing.fastest({"one call": one_call, "five calls": five_calls}) == "five calls"
        assert x.add(1) is not None and clock[0] > 0  # the mode itself stays on for the caller


def test_settled_timings_leave_out_the_cost_of_switching_from_another_engine(monkeypatch):
    # onnxruntime's threads and OpenMP's spin for a while after their work: on two cores a torch call right
    # after an onnxruntime call took twice its time, and optimize(compile=True) misjudged its forms
    clock, last = [0.0], [None]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def engine(name, cost):
        def run():
            clock[0] += cost + (cost if last[0] not in (None, name) else 0.0)  # a switch doubles the call
            last[0] = name
        return run

    fns = {"torch": engine("torch", 1e-3), "onnxruntime": engine("onnxruntime", 1.2e-3)}
    assert timing.medians(fns, 9)["torch"] == pytest.approx(2e-3)  # every timed call paid the switch
    assert timing.medians(fns, 9, settle=True) == pytest.approx({"torch": 1e-3, "onnxruntime": 1.2e-3})


def _switching_engines(monkeypatch, slow_calls: int):
    """Two fake engines on a fake clock: the first ``slow_calls`` calls after a switch take 3x their time
    (the other engine's threads still spinning)."""
    clock, state = [0.0], {"last": None, "since": 0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def engine(name, cost):
        def run():
            state["since"] = state["since"] + 1 if state["last"] == name else 1
            clock[0] += cost * (3 if state["since"] <= slow_calls else 1)
            state["last"] = name
        return run

    return engine


def test_settled_blocks_leave_out_a_switch_that_slows_several_calls(monkeypatch):
    engine = _switching_engines(monkeypatch, slow_calls=3)
    fns = {"torch": engine("torch", 1e-4), "onnxruntime": engine("onnxruntime", 2e-4)}
    calls = {"torch": 8, "onnxruntime": 8}
    assert timing.medians(fns, 9, calls)["torch"] == pytest.approx(1e-4 * 14 / 8)  # 3 slow calls in each block
    assert timing.medians(fns, 9, calls, settle=True) == pytest.approx({"torch": 1e-4, "onnxruntime": 2e-4})


def test_time_models_settles_each_call_and_lets_a_clearly_slower_model_leave_early(monkeypatch):
    engine = _switching_engines(monkeypatch, slow_calls=1)  # the first call after a switch takes 3x its time
    runs = {"fast": engine("fast", 10e-3), "close": engine("close", 10.5e-3), "behind": engine("behind", 13e-3),
            "slow": engine("slow", 20e-3)}
    calls = dict.fromkeys(runs, 0)

    def model(name):
        def forward(x):
            calls[name] += 1
            runs[name]()
        return forward

    t = timing.time_models({k: model(k) for k in runs}, torch.ones(1), rounds=5, budget=10.0)
    assert t == pytest.approx({"fast": 10e-3, "close": 10.5e-3, "behind": 13e-3, "slow": 20e-3})  # no switch timed
    # each call settled; 2x behind: out after one round (over 1.25 squared), 1.3x: after two (over 1.25)
    assert calls == {"fast": 2 * 5, "close": 2 * 5, "behind": 2 * 2, "slow": 2 * 1}
    calls.update(dict.fromkeys(runs, 0))
    t = timing.time_models({k: model(k) for k in runs}, torch.ones(1), rounds=5, budget=10.0, drop=None)
    assert calls == dict.fromkeys(runs, 2 * 5) and t["slow"] == pytest.approx(20e-3)


def test_time_models_times_short_calls_in_blocks_and_fits_its_budget(monkeypatch):
    engine = _switching_engines(monkeypatch, slow_calls=0)
    calls = []
    tiny, big = engine("tiny", 1e-4), engine("big", 0.2)
    models = {"tiny": lambda x: calls.append("tiny") or tiny(), "big": lambda x: calls.append("big") or big()}
    t = timing.time_models(models, torch.ones(1), rounds=5, budget=1.0, drop=None)
    assert t == pytest.approx({"tiny": 1e-4, "big": 0.2})
    assert calls.count("big") == 2 * 3  # 0.4 s a round: 3 rounds, the fewest, within about a second
    assert calls.count("tiny") == 2 + 2 * 2 * 10  # then blocks of 10 calls (1 ms) in the next two rounds
