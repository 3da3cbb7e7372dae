"""bfloat16 through the fast path: the same model to bfloat16's precision, measured against float32, a
trained model's predictions kept, and float32 kept where the CPU has no bfloat16 products."""

import copy
import warnings

import pytest
import torch
from torch import nn

from onebyone import OneByOneError, data
from onebyone.torch import ConvAct, FusedPointwiseChain, optimize
from onebyone.torch.fast import CastIO
from onebyone.train import TrainConfig, evaluate, train
from onebyone.zoo import create_model, list_models, model_info

from .cpus import REAL, REWRITES, reads_the_hardware, simulate

needs_bf16 = pytest.mark.skipif(not REAL.bf16, reason=f"this CPU has no bfloat16 products ({REAL.describe()})")


@pytest.mark.parametrize("act", ["relu", "relu6", "gelu", "identity"])
@pytest.mark.parametrize("kernel", [1, 3])
def test_convact_in_bfloat16_is_the_conv_to_bfloat16_precision(act, kernel, cpu):
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, kernel, padding=kernel // 2).eval()
    fast = ConvAct(conv, act).to(torch.bfloat16)
    x = torch.randn(2, 32, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = {"relu": torch.relu, "relu6": nn.functional.relu6, "gelu": nn.functional.gelu,
                "identity": lambda t: t}[act](conv(x))
        got = fast(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() <= 1e-2 * want.abs().max()  # 8 bits of mantissa


def test_a_fused_chain_in_bfloat16(cpu):
    torch.manual_seed(0)
    layers = [nn.Conv1d(3, 64, 1), nn.ReLU(), nn.Conv1d(64, 256, 1)]
    chain = FusedPointwiseChain.from_layers(layers, pool="max").to(torch.bfloat16)
    x = torch.randn(4, 3, 500)
    with torch.no_grad():
        want = nn.Sequential(*layers)(x).amax(2)
        got = chain(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16 and (got.float() - want).abs().max() <= 1e-2 * want.abs().max()


@needs_bf16
@pytest.mark.parametrize("name", list_models())
def test_optimize_in_bfloat16_keeps_the_callers_dtype_and_reports_its_error(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, *model_info(name).input_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt, report = optimize(model, x, dtype=torch.bfloat16, passes=REWRITES)
    with torch.no_grad():
        want, got = model(x), opt(x)
    assert isinstance(opt, CastIO) and got.dtype == torch.float32 and got.shape == want.shape
    names = dict(opt.named_modules())
    assert all(type(names[row["name"]]).__name__ == row["layer"] for row in report.layers)  # named as returned
    back = copy.deepcopy(opt).float()  # its weights back in float32: the inputs follow them
    with torch.no_grad():
        assert back.dtype == torch.float32 and (back(x) - want).abs().max() <= 2e-2 * want.abs().max()
    p = report.precision
    assert p["dtype"] == "bfloat16" and p["max_abs_diff"] == pytest.approx(float((got - want).abs().max()), rel=0.2)
    assert p["relative"] <= p["tolerance"] == 2e-2
    slower = p["ms"]["bfloat16"] >= p["ms"]["float32"] > 0  # both timed on the example, and said when no gain
    assert any("the eager rewrite ran no faster in bfloat16 than in float32" in n for n in report.notes) == slower
    assert any("ran no faster in bfloat16 than in float32" in str(w.message) for w in caught) == slower


def test_optimize_in_bfloat16_keeps_float32_on_a_cpu_without_bfloat16_products(monkeypatch):
    simulate(monkeypatch, "AVX2")
    model = create_model("nin_cifar").eval()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="kept float32: this CPU has no bfloat16 products"):
        opt, report = optimize(model, x, dtype=torch.bfloat16, passes=REWRITES)
    assert not isinstance(opt, CastIO) and report.precision is None
    assert any(n.startswith("dtype=bfloat16 asked, float32 kept: this CPU has no bfloat16 products (AVX2")
               for n in report.notes)
    assert all(p.dtype == torch.float32 for p in opt.parameters())
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-4, atol=1e-4)


@needs_bf16
def test_optimize_refuses_a_bfloat16_error_past_the_tolerance():
    model = create_model("nin_cifar").eval()
    with pytest.raises(OneByOneError, match=r"in bfloat16 the outputs moved by .* \(> dtype_tol 1e-06\)"):
        optimize(model, torch.randn(2, 3, 32, 32), dtype=torch.bfloat16, dtype_tol=1e-6)


def test_optimize_names_the_dtypes_it_takes():  # on every CPU: the refusal does not depend on bfloat16 products
    model = create_model("nin_cifar").eval()
    with pytest.raises(OneByOneError, match=r"dtype must be None, torch.float32, torch.bfloat16 or torch.int8, "
                                            r"got torch.float16"):
        optimize(model, torch.randn(2, 3, 32, 32), dtype=torch.float16)


@needs_bf16
@pytest.mark.filterwarnings("ignore:optimize. bfloat16 was timed and ran no faster")  # a small model: may be so
def test_a_trained_digits_model_predicts_the_same_in_bfloat16():
    model, metrics = train(TrainConfig("nin_digits", "digits", epochs=12, lr=1e-2), progress=False)
    x, y = data.load("digits", "test")
    opt, report = optimize(model.eval(), torch.from_numpy(x[:64]), dtype=torch.bfloat16, passes=REWRITES)
    with torch.no_grad():
        a = model(torch.from_numpy(x)).argmax(1)
        b = opt(torch.from_numpy(x)).argmax(1)
    agree = float((a == b).float().mean())
    assert agree >= 0.995  # top-1 agrees on at least 99.5% of the test set
    assert abs(evaluate(opt, x, y) - evaluate(model, x, y)) <= 0.003  # accuracy within 0.3 points


@reads_the_hardware
def test_openvino_asked_for_bfloat16_says_what_it_compiled_for():
    """OpenVINO takes bf16 as a hint: on a CPU without bfloat16 products it compiles float32 and says so
    (``ran_in``), which the race reports; its outputs stay within bfloat16's tolerance either way."""
    pytest.importorskip("openvino")
    from onebyone.torch.fast import OpenVino

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    fast = OpenVino(model, tol=2e-2, precision="bf16")
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()
    assert fast.ran_in in (("bf16", "f32") if REAL.bf16 else ("f32",))  # OpenVINO's own choice where it has both
    with pytest.raises(OneByOneError, match="precision must be 'f32' or 'bf16'.*got 'int8'"):
        OpenVino(model, precision="int8")


def test_castio_gives_back_namedtuples_and_nested_outputs_in_the_callers_dtype():
    """A model returning a namedtuple (detection heads, timm's features) made CastIO raise "Out.__new__()
    missing 1 required positional argument": each field now comes back in the caller's dtype, as in nested
    lists and dicts; a float input found inside a list sets that dtype too."""
    import collections

    Out = collections.namedtuple("Out", "logits feat")

    class Fields(dict):  # a dict of the user's own kind (torch's pytree does not look inside it)
        pass

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.c(x[0] if isinstance(x, list) else x)
            return Out(y.mean((2, 3)), Fields({"map": [y], "shape": y.shape[1]}))

    wrapped = CastIO(copy.deepcopy(Heads()).to(torch.bfloat16), torch.bfloat16)
    for x in (torch.randn(2, 3, 4, 4), [torch.randn(2, 3, 4, 4)]):
        out = wrapped(x)
        assert type(out) is Out and out.logits.dtype == torch.float32 and out.feat["map"][0].dtype == torch.float32
        assert type(out.feat) is Fields
        assert out.feat["shape"] == 4
