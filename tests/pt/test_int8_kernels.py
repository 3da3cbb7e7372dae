"""torch's int8 form runs each layer on fbgemm's kernels or oneDNN's, whichever ran it faster (on a CPU with
VNNI): the choice follows the timings, and either library computes the same layer to within one code.
Nothing here asserts a speed; the timings are replaced where the choice itself is tested."""
import dataclasses

import pytest
import torch
from torch import nn

from onebyone.torch.fast import int8_kernels, private
from onebyone.torch.fast.int8_torch import plain_layers, torch_int8

HAVE = torch.backends.quantized.supported_engines
pytestmark = pytest.mark.skipif(not all(lib in HAVE for lib in int8_kernels.LIBRARIES),
                                reason="this torch lacks fbgemm's or oneDNN's int8 kernels")


@pytest.fixture
def vnni(monkeypatch):
    """The fast path sees a CPU with VNNI (the 7-bit activations of torch's form run on either library)."""
    caps = dataclasses.replace(private.capabilities(), vnni=True)
    monkeypatch.setattr(private, "capabilities", lambda: caps)


def int8_model():
    """A depthwise conv, a 1x1 conv and a Linear in torch's int8 form, and an input."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                      nn.ReLU(), nn.Conv2d(16, 32, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(32, 10)).eval()
    cal = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    q, _ = torch_int8(plain_layers(m, cal[0]), cal[0], cal)
    return q, cal[0]


def quantized_layers(q) -> dict:
    return {n: m for n, m in q.named_modules() if private.packed_weights(m) is not None}


def test_each_layer_keeps_the_library_that_ran_it_faster(vnni, monkeypatch):
    q, x = int8_model()
    layers = quantized_layers(q)
    faster = {id(m): int8_kernels.LIBRARIES[i % 2] for i, m in enumerate(layers.values())}  # each, in turn
    made, real = {}, private.repacked
    monkeypatch.setattr(private, "repacked", lambda m, lib: made.setdefault((id(m), lib), real(m, lib)))
    monkeypatch.setattr(int8_kernels, "best_times", lambda m, call, packed, rounds: {
        lib: 1.0 if lib == faster[id(m)] else 2.0 for lib in packed})
    chosen = int8_kernels.fastest_kernels(q, x)
    assert chosen == {n: faster[id(m)] for n, m in layers.items()} and len(chosen) == 4
    for m in layers.values():  # the model runs the weights packed for the library chosen
        assert private.packed_weights(m) is made[(id(m), faster[id(m)])]


def test_either_library_computes_each_layer_to_within_one_code(vnni):
    q, x = int8_model()
    before = q(x)
    chosen = int8_kernels.fastest_kernels(q, x, rounds=2)  # timed for real: whichever wins
    assert set(chosen) == set(quantized_layers(q)) and set(chosen.values()) <= set(int8_kernels.LIBRARIES)
    from onebyone.torch.capture import calls_of
    first, _ = calls_of(q, x, quantized_layers(q).values())
    with torch.no_grad():
        for name, m in quantized_layers(q).items():
            outs = []
            for lib in int8_kernels.LIBRARIES:
                private.set_packed(m, private.repacked(m, lib))
                outs.append(m(*first[m][0]).int_repr().int())
            assert (outs[0] - outs[1]).abs().max() <= 1, name
        after = q(x)
    assert (after - before).abs().max() <= 0.02 * before.abs().max()


def test_without_vnni_nothing_is_timed_or_repacked(monkeypatch):
    caps = dataclasses.replace(private.capabilities(), vnni=False)
    monkeypatch.setattr(private, "capabilities", lambda: caps)
    q, x = int8_model()
    packed = {n: private.packed_weights(m) for n, m in quantized_layers(q).items()}
    assert int8_kernels.fastest_kernels(q, x) == {}
    assert all(private.packed_weights(m) is packed[n] for n, m in quantized_layers(q).items())


def test_only_a_quantized_conv_or_linear_counts_as_one_packed_layer():
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    q, _ = int8_model()
    assert all(private.packed_weights(q.get_submodule(n)) is not None for n in ("0", "2", "4", "8"))
    others = [nnqd.LSTM(4, 4), nnqd.LSTMCell(4, 4), nnq.Embedding(10, 4), q.get_submodule("8")._packed_params,
              nn.Conv2d(3, 3, 1), nn.ReLU()]  # a dynamic RNN holds a list of packed weights, not one layer's
    assert all(private.packed_weights(m) is None for m in others)


def test_a_library_that_refuses_a_layer_leaves_it_and_torchs_choice_as_they_were(monkeypatch):
    q, _ = int8_model()
    m, engine = q.get_submodule("4"), torch.backends.quantized.engine
    before = private.packed_weights(m)

    def refuse(*args):
        raise RuntimeError("this library does not take the layer")

    monkeypatch.setattr(m, "set_weight_bias", refuse)
    assert private.repacked(m, "onednn") is None
    assert private.packed_weights(m) is before and torch.backends.quantized.engine == engine


def test_optimize_reports_the_library_each_int8_layer_runs(vnni):
    """The choice is wired into optimize(dtype=torch.int8): the report names a library for every layer of
    torch's form."""
    from onebyone.torch import optimize

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                      nn.ReLU(), nn.Conv2d(16, 32, 1)).eval()
    cal = [torch.randn(4, 3, 12, 12) for _ in range(4)]
    _, report = optimize(m, cal[0], dtype=torch.int8, calibration=cal, passes=["fold", "check", "int8"])
    assert set(report.precision["torch_kernels"]) == {"0", "2", "4"}
    assert set(report.precision["torch_kernels"].values()) <= set(int8_kernels.LIBRARIES)
