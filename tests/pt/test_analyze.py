"""The analyzer on torch models: the rules peers get wrong, published numbers, golden table, bad input."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebyone import OneByOneError, analyze, cost
from onebyone.cli import main
from onebyone.zoo import create_model, list_models


def test_macs_and_flops_are_both_shown_and_never_confused():
    s = analyze(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(6, 4)), (3, 8, 8))
    d = s.to_dict()
    assert d["totals"]["flops"] == 2 * d["totals"]["macs"] > 0
    assert all(r["flops"] == 2 * r["macs"] for r in d["rows"])
    assert "bias excluded" in d["convention"] and "FLOPs = 2 x MACs" in s.table()


@pytest.mark.parametrize(
    "layer,size",
    [
        (lambda b: nn.Conv2d(4, 6, 3, bias=b), (4, 7, 7)),
        (lambda b: nn.Linear(5, 3, bias=b), (2, 5)),
        (lambda b: nn.Conv1d(4, 6, 1, bias=b), (4, 9)),
    ],
)
def test_bias_is_excluded_from_macs_for_every_layer_type(layer, size):
    with_bias, without = analyze(layer(True), size), analyze(layer(False), size)
    assert with_bias.macs == without.macs and with_bias.params > without.params


def test_a_linear_per_pixel_counts_what_the_1x1_conv_counts():
    per_pixel = analyze(nn.Linear(16, 32), (7, 9, 16), batch_size=2)  # (B, H, W, C)
    conv = analyze(nn.Conv2d(16, 32, 1), (16, 7, 9), batch_size=2)
    assert per_pixel.macs == conv.macs == 2 * 7 * 9 * 32 * 16


@pytest.mark.parametrize("groups", [1, 2, 8, 32])
def test_grouped_and_depthwise_divide_by_groups_once(groups):
    s = analyze(nn.Conv2d(32, 64, 3, padding=1, groups=groups), (32, 10, 10))
    assert s.macs == 64 * 10 * 10 * (32 // groups) * 9
    assert s.rows[0].kind == {1: "conv", 32: "depthwise"}.get(groups, "grouped")


def test_shared_modules_count_per_call_and_params_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.block(torch.relu(self.block(x)))

    model = Twice()
    s = analyze(model, (8, 6, 6))
    assert s.macs == 2 * 8 * 36 * 8 * 9
    assert s.params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.rows)


def test_functional_ops_count_too():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.k = nn.Parameter(torch.randn(10, 6)), nn.Parameter(torch.randn(6, 3, 3, 3))

        def forward(self, x):  # (B, 3, 8, 8)
            h = F.conv2d(x, self.k, padding=1)  # (B, 6, 8, 8)
            h = F.linear(h.permute(0, 2, 3, 1), self.w)  # (B, 8, 8, 10)
            return torch.einsum("bhwc,cd->bhwd", h, torch.ones(10, 2)) @ torch.ones(2, 5)

    model = Functional()
    s = analyze(model, (3, 8, 8))
    by_type = {r.type: r.macs for r in s.rows}
    assert by_type == {
        "F.conv2d": 6 * 64 * 27,
        "F.linear": 64 * 10 * 6,
        "F.einsum": 64 * 10 * 2,
        "F.matmul": 64 * 5 * 2,
    }
    assert s.params == 60 + 162 and s.uncounted == []


def test_parameters_outside_layers_and_never_called_layers_are_listed_apart_from_the_warning():
    class Scale(nn.Module):  # a layer-scale: an elementwise product, no MACs by nature
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.scale

    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.aux = nn.Sequential(Scale(), nn.Linear(4, 2)), nn.Linear(4, 3)  # aux: never called

        def forward(self, x):
            return self.body(x)

    s = analyze(WithAux(), (4,))
    assert s.outside_layers == [("body.0", "Scale", 4)] and s.never_called == [("aux", "Linear", 15)]
    assert s.uncounted == []  # nothing was missed
    assert s.params == 4 + 10 + 15 and sum(r.params for r in s.rows) == s.params  # rows still sum to the total
    lines = "\n".join(s.summary_lines())
    assert "never called (15 params, no MACs): aux (Linear)" in lines and "WARNING" not in lines


@pytest.mark.parametrize("name", ["mobilenet_v1", "squeezenet1_0", "squeezenet1_1"])
def test_param_totals_equal_torch(name):
    model = create_model(name)
    assert analyze(model, (3, 224, 224)).params == sum(p.numel() for p in model.parameters())


def test_mobilenet_v1_table_2():
    s = analyze(create_model("mobilenet_v1"), (3, 224, 224))
    share = s.share()
    assert s.macs == 568_740_352
    assert (share["pointwise"]["macs"], share["pointwise"]["weights"]) == (94.86, 74.59)
    assert share["conv"]["macs"] == 1.91  # the paper's table prints 1.19%
    assert s.footer().startswith("1x1 convolutions: 94.9% of MACs, 74.6% of weights")


def test_squeezenet_params_and_the_inception_bottleneck():
    assert analyze(create_model("squeezenet1_0"), (3, 224, 224)).params == 1_248_424
    assert analyze(create_model("squeezenet1_1"), (3, 224, 224)).params == 1_235_496
    direct = analyze(nn.Conv2d(192, 32, 5, padding=2), (192, 28, 28))
    bottleneck = analyze(nn.Sequential(nn.Conv2d(192, 16, 1), nn.Conv2d(16, 32, 5, padding=2)), (192, 28, 28))
    assert (direct.macs, bottleneck.macs) == (120_422_400, 12_443_648)
    assert [r.macs for r in bottleneck.rows] == [2_408_448, 10_035_200]


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 10, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def test_golden_table_and_rows_sum_to_totals(golden):
    s = analyze(small_model(), (3, 32, 32), batch_size=2)
    golden(s.table() + "\n", "summary_small.txt")
    t = s.totals()
    for field in ("params", "weights", "macs", "activations", "bytes_read", "bytes_written"):
        assert sum(getattr(r, field) for r in s.rows) == t[field], field
    by_formula = [
        cost.conv_cost((2, 3, 32, 32), 16, 3, padding=1),
        cost.conv_cost((2, 16, 32, 32), 16, 3, padding=1, groups=16),
        cost.conv1x1_cost((2, 16, 32, 32), 32),
        cost.conv1x1_cost((2, 32, 16, 16), 10),
    ]
    assert t["macs"] == sum(c.macs for c in by_formula)
    grouped = s.grouped(0)
    assert sum(r.macs for r in grouped) == t["macs"]


def test_bad_input_gets_clear_errors(capsys):
    with pytest.raises(OneByOneError, match=r"Sequential failed at `1` on input of shape \(1, 3, 8, 8\): RuntimeError"):
        analyze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 2)), (3, 8, 8))
    with pytest.raises(OneByOneError, match=r"`1` \(Linear\) received \(1, 4, 6, 6\)$"):
        analyze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 2)), (3, 8, 8))
    with pytest.raises(OneByOneError, match=r"needs an input to be analyzed: pass input_size=\(C, H, W\) or example="):
        analyze(nn.Linear(3, 2))
    with pytest.raises(OneByOneError, match="expected a torch.nn.Module or a keras.Model, got object"):
        analyze(object())
    assert main(["summary", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'; the zoo has: " + ", ".join(list_models()) in err
    assert main(["summary", "nosuch.module:f"]) == 2
    assert "could not import module 'nosuch.module'" in capsys.readouterr().err
    assert main(["summary", "json:no_factory"]) == 2
    assert "module 'json' has no attribute 'no_factory'" in capsys.readouterr().err


def test_cli_summary_formats(capsys):
    assert main(["summary", "squeezenet1_1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["params"] == 1_235_496 and d["share_by_kind"]["pointwise"]["macs"] > 0
    assert main(["summary", "squeezenet1_1", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,type,kind") and len(lines) > 20
    assert main(["summary", "mobilenet_v1", "--depth", "1"]) == 0  # as torchinfo's depth: the top-level modules
    text = capsys.readouterr().out
    assert "1x1 convolutions: 94.9% of MACs, 74.6% of weights" in text and "568,740,352" in text
    assert " features " in text and "features.0" not in text and "567,716,352" in text  # its layers summed
    assert main(["summary", "mobilenet_v1", "--depth", "2"]) == 0
    text = capsys.readouterr().out
    assert " features.3 " in text and "features.3.0" not in text
    assert main(["summary", "tests.pt.test_analyze:small_model", "--input-size", "3", "16", "16"]) == 0
    assert "MaxPool2d" in capsys.readouterr().out


def test_dtype_sets_the_bytes():
    a = analyze(nn.Conv2d(4, 4, 1), (4, 5, 5), dtype="float32").rows[0]
    b = analyze(nn.Conv2d(4, 4, 1), (4, 5, 5), dtype="float16").rows[0]
    assert (
        a.bytes_read == 2 * b.bytes_read and a.bytes_written == 100 * 4 and math.isclose(b.intensity, 2 * a.intensity)
    )


def test_cli_summary_finds_modules_in_the_current_folder_and_passes_factory_arguments(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels_cli.py").write_text(
        "from torch import nn\n"
        "def net(width=4, classes=3):\n"
        "    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, classes))\n")
    monkeypatch.chdir(tmp_path)
    assert main(["summary", "mymodels_cli:net", "--input-size", "8", "--model-arg", "width=16",
                 "--model-arg", "classes=5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["macs"] == 8 * 16 + 16 * 5  # the factory got width=16 and classes=5
    assert main(["summary", "mymodels_cli:net"]) == 2  # no default input size: the flag is named
    assert "give one sample's shape with --input-size" in capsys.readouterr().err
    assert main(["summary", "nin_digits", "--model-arg", "num_classes=4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][-1]["output_shape"][1] == 4
    assert main(["summary", "mymodels_cli:net", "--input-size", "8", "--model-arg", "depth"]) == 2
    assert "--model-arg expects KEY=VALUE" in capsys.readouterr().err


def test_summary_analyzes_at_the_size_the_factory_sets(capsys):
    from onebyone.cli import main

    assert main(["summary", "mobilenet_v1", "--model-arg", "resolution=160", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][0]["input_shape"] == [1, 3, 160, 160]  # resolution=160 is the input, not the zoo's 224
    assert out["totals"]["macs"] == analyze(create_model("mobilenet_v1"), (3, 160, 160)).macs


def test_exporting_our_layers_with_the_tracer_warns_about_nothing_of_ours():
    import io
    import warnings

    model = create_model("mobilenet_v1", alpha=0.25).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), io.BytesIO(), dynamo=False)
    ours = [str(w.message) for w in caught if "onebyone" in str(w.filename)]
    assert ours == []


def test_the_analyzer_counts_the_wrapped_model():
    """onnxruntime and compiled code make no torch calls the analyzer could see: it must count the model."""
    from onebyone import analyze
    from onebyone.torch.fast import Compiled, OnnxRuntime, OpenVino

    from .test_exported import small_model

    model = small_model()
    want = analyze(model, input_size=(3, 8, 8))
    for wrapped in (OnnxRuntime(model), OpenVino(model), Compiled(model)):
        got = analyze(wrapped, input_size=(3, 8, 8))
        assert (got.macs, got.params) == (want.macs, want.params) and got.macs > 0


def test_a_called_layers_parameter_no_operation_read_is_named_by_its_path_not_a_warning():
    """Hugging Face's embeddings: position table added (no MACs: outside any layer's product), a mask token
    read only when a mask is given: neither is a product the analyzer missed."""

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos, self.mask_token = nn.Parameter(torch.randn(1, 4, 8)), nn.Parameter(torch.zeros(1, 1, 8))
            self.proj = nn.Linear(8, 8)

        def forward(self, x, mask=None):
            if mask is not None:
                x = torch.where(mask[..., None], self.mask_token, x)
            return self.proj(x + self.pos)

    s = analyze(Embeddings(), example=torch.randn(1, 4, 8))
    assert s.uncounted == [] and s.outside_layers == [("", "Embeddings", 32)]
    assert s.never_called == [("mask_token", "parameter not read", 8)]
    assert "WARNING" not in "\n".join(s.summary_lines()) and sum(r.params for r in s.rows) == s.params == 32 + 8 + 72
    masked = analyze(Embeddings(), example=(torch.randn(1, 4, 8), torch.tensor([[True, False, False, True]])))
    assert masked.never_called == [] and masked.outside_layers == [("", "Embeddings", 40)]


def test_a_leaf_computing_in_code_the_analyzer_cannot_see_is_still_the_warning():
    @torch.jit.script
    def product(x, w):
        return x @ w.t()

    class Scripted(nn.Module):  # its product runs in TorchScript, out of the analyzer's sight
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 8))

        def forward(self, x):
            return product(x, self.weight)

    s = analyze(nn.Sequential(nn.Linear(8, 8), Scripted()), example=torch.randn(2, 8))
    assert [u[:2] for u in s.uncounted] == [("1", "Scripted")] and s.never_called == []
    assert "WARNING" in "\n".join(s.summary_lines())


def test_inputs_given_where_the_shape_goes_are_the_example_as_fvcore_takes_them():
    """``analyze(model, x)`` (fvcore's order) counts on ``x``; inputs given twice, or something that is neither
    a shape nor inputs, is refused in a line, never by printing the whole tensor."""
    model, x = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 2)), torch.randn(2, 3, 5, 5)
    want = analyze(model, example=x)
    for given in (x, (x,)):
        got = analyze(model, given)
        assert (got.params, got.macs, got.batch_size) == (want.params, want.macs, 2)
    with pytest.raises(OneByOneError, match="got inputs for both: give the inputs once"):
        analyze(model, x, example=x)
    with pytest.raises(OneByOneError, match=r"input_size must be one sample's shape.*got a str: abc$"):
        analyze(model, "abc")
    with pytest.raises(OneByOneError) as e:
        analyze(model, 7)
    assert len(str(e.value)) < 200
