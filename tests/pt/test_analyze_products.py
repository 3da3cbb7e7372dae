"""Every tensor product is counted, checked against PyTorch's own FlopCounterMode (FLOPs / 2), and what
cannot be counted is named."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from onebyone import analyze, cost
from onebyone.torch.collect import AT_FUNCTIONS
from onebyone.torch.tensors import call


def flop_counter_macs(model, example) -> int:
    """PyTorch's count, with attention on its math kernel: FlopCounterMode does not count the fused CPU
    attention kernels (flash), which compute the same products."""
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as fc:
        call(model, example)
    return fc.get_total_flops() // 2


class Functional(nn.Module):
    """Products called as functions and tensor methods, between activations and with parameters."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 24))
        self.b = nn.Parameter(torch.randn(24))

    def forward(self, x):  # (B, N, 16)
        h = torch.addmm(self.b, x.flatten(0, 1), self.w).view(x.shape[0], x.shape[1], 24)  # GPT-2's Conv1D
        q = h.view(x.shape[0], x.shape[1], 4, 6).transpose(1, 2)  # (B, 4, N, 6)
        scores = torch.baddbmm(torch.zeros(8, 10, 10), q.flatten(0, 1), q.flatten(0, 1).transpose(1, 2))
        out = scores.softmax(-1).bmm(q.flatten(0, 1))  # Tensor.bmm
        return out.sum() + x.flatten(0, 1).mm(self.w).sum()  # Tensor.mm


class Einsum(nn.Module):
    def __init__(self, spec: str):
        super().__init__()
        self.spec = spec

    def forward(self, a, b):
        return torch.einsum(self.spec, a, b)


@pytest.mark.parametrize("make,example", [
    (lambda: nn.MultiheadAttention(32, 4), (torch.randn(7, 2, 32),) * 3),
    (lambda: nn.MultiheadAttention(32, 4, batch_first=True, kdim=16, vdim=8),
     (torch.randn(2, 7, 32), torch.randn(2, 5, 16), torch.randn(2, 5, 8))),
    (lambda: nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), torch.randn(2, 9, 32)),
    (lambda: nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1), torch.randn(2, 8, 5, 6)),
    (lambda: nn.ConvTranspose1d(6, 4, 2, stride=2, groups=2), torch.randn(2, 6, 9)),
    (Functional, torch.randn(2, 10, 16)),
    (lambda: Einsum("...ij,...jk"), (torch.randn(3, 4, 5), torch.randn(3, 5, 6))),  # the output implied
    (lambda: Einsum("bij,bjk"), (torch.randn(3, 4, 5), torch.randn(3, 5, 6))),
    (lambda: Einsum("...ij,...jk->...ik"), (torch.randn(2, 3, 4, 5), torch.randn(2, 3, 5, 6))),
])
def test_macs_equal_pytorch_flop_counter(make, example):
    torch.manual_seed(0)
    model = make()  # counted in train mode (no dropout here): in eval, torch's fused encoder-layer kernel
    s = analyze(model, example=example)  # is an op FlopCounterMode does not count (it reads 0 MACs)
    assert s.macs == flop_counter_macs(model, example) > 0
    assert s.uncounted == [] and sum(r.params for r in s.rows) == s.params


def test_scaled_dot_product_attention_counts_both_products_over_every_key():
    q, k, v = torch.randn(2, 4, 10, 6), torch.randn(2, 4, 7, 6), torch.randn(2, 4, 7, 5)

    class Attend(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=False)

    s = analyze(Attend(), example=(q, k, v))
    assert s.macs == 2 * 4 * 10 * 7 * (6 + 5) == cost.attention_cost(q.shape, k.shape, v.shape).macs
    assert s.macs == flop_counter_macs(Attend(), (q, k, v)) and [r.kind for r in s.rows] == ["attention"]
    q = torch.randn(2, 4, 10, 6)  # self-attention: the fused flash kernel, which FlopCounterMode reads as 0 FLOPs
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        Attend()(q, q, q)
    assert fc.get_total_flops() == 0 and analyze(Attend(), example=(q, q, q)).macs == 2 * 4 * 10 * 10 * 12


def test_attention_is_its_own_kind_and_per_token_linears_are_pointwise():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    s = analyze(layer, example=torch.randn(2, 9, 32))
    kinds = {r.name: r.kind for r in s.rows if r.macs}
    assert kinds["self_attn.attention"] == "attention" and kinds["self_attn.projections"] == "pointwise"
    assert kinds["linear1"] == kinds["linear2"] == "pointwise"  # a Linear at every token is a 1x1 conv
    attention = [r for r in s.rows if r.kind == "attention"]
    assert sum(r.macs for r in attention) == cost.attention_cost((2, 4, 9, 8), (2, 4, 9, 8), (2, 4, 9, 8)).macs
    head = analyze(nn.Linear(32, 10), (32,))
    assert [r.kind for r in head.rows] == ["dense"]  # a Linear on (B, C) stays dense
    assert "1x1 convolutions: " in s.footer() and s.share()["pointwise"]["macs"] > 80


def test_products_the_analyzer_cannot_count_are_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 8)

        def forward(self, x):
            y = torch.tensordot(x, x, dims=([2], [2]))  # between activations, no parameter at all
            return self.rnn(x)[0].sum() + y.sum()

    s = analyze(Odd(), example=torch.randn(5, 2, 4))
    named = {t for _, t, _ in s.uncounted}
    assert "tensordot" in named and ("GRU" in named or "gru" in named)
    assert any("WARNING" in line for line in s.summary_lines())


class Aliases(nn.Module):
    """Products under their other names: a ``torch.linalg`` alias, and ones the analyzer cannot count."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):  # (B, 8)
        y = torch.linalg.matmul(x, self.w)  # counted as matmul
        z = torch.linalg.multi_dot([x, self.w, self.w]) + self.w.__rmatmul__(x)
        d = torch.vdot(x[0], x[1]) + torch.linalg.vecdot(x, y).sum()
        c = torch.ops.aten.convolution(x[:, :, None, None], self.w[:, :, None, None], None, [1, 1], [0, 0], [1, 1],
                                       False, [0, 0], 1)
        return y.sum() + z.sum() + d + c.sum()


def test_a_product_under_another_name_is_counted_or_named():
    s = analyze(Aliases(), example=torch.randn(4, 8))
    assert s.macs == 4 * 8 * 8  # torch.linalg.matmul: the others are named, not counted
    assert {t for _, t, _ in s.uncounted} == {"linalg_multi_dot", "__rmatmul__", "vdot", "linalg_vecdot",
                                              "convolution"}


class Exportable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.up = nn.Conv2d(3, 8, 3, padding="same"), nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.up1, self.head, self.w = nn.ConvTranspose1d(4, 4, 2, stride=2), nn.Linear(4, 6), nn.Parameter(
            torch.randn(6, 6))

    def forward(self, x):  # (B, 3, H, W)
        line = self.up1(self.up(self.conv(x).relu()).flatten(2))  # (B, 4, 8HW)
        q = self.head(line.transpose(1, 2)).unflatten(1, (4, -1))  # (B, 4 heads, 2HW, 6)
        return F.scaled_dot_product_attention(q, q, q) @ self.w


def test_the_module_of_a_torch_export_program_is_counted_as_the_model():
    """``torch.export``'s module calls aten overloads (``aten.conv2d.default``...), not the functions, and
    refuses ``eval()``: counted all the same, every product, every parameter."""
    torch.manual_seed(0)
    model, x = Exportable().eval(), torch.randn(2, 3, 6, 6)
    exported = torch.export.export(model, (x,)).module()
    want, got = analyze(model, example=x), analyze(exported, example=x)
    assert (got.macs, got.params, got.uncounted, got.outside_layers) == (want.macs, want.params, [], [])
    assert got.macs == flop_counter_macs(model, x) > 0
    assert all(hasattr(torch.ops.aten, name) for name in AT_FUNCTIONS)  # every product the analyzer maps exists


def test_a_torch_compile_wrapper_is_counted_as_the_module_it_wraps(capfd):
    """The wrapper's compiled code would trace the analyzer's hooks (recompiling at each call, up to dynamo's
    limit, with warnings): the module it wraps is counted, under its own names."""
    torch.manual_seed(0)
    model, x = Exportable().eval(), torch.randn(2, 3, 6, 6)
    want, got = analyze(model, example=x), analyze(torch.compile(model), example=x)
    assert (got.macs, got.params, [r.name for r in got.rows]) == (want.macs, want.params, [r.name for r in want.rows])
    assert "recompile" not in capfd.readouterr().err  # torch's own handler writes dynamo's warnings to stderr


def test_examples_may_be_tuples_and_dicts():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(6, 3)

        def forward(self, left, right=None):
            return self.a(left) + self.b(right)

    model = TwoInputs()
    x, y = torch.randn(5, 4), torch.randn(5, 6)
    by_position, by_keyword = analyze(model, example=(x, y)), analyze(model, example={"left": x, "right": y})
    assert by_position.macs == by_keyword.macs == 5 * (4 * 3 + 6 * 3) and by_position.batch_size == 5
    with pytest.raises(Exception, match=r"failed at `b` on input \{'left': \(5, 4\)\}"):
        analyze(model, example={"left": x})


def test_a_product_it_cannot_count_in_many_places_says_how_many():
    """timm's sequencer: one LSTM per block; the warning names the first and counts the places."""
    model = nn.Sequential(nn.LSTM(4, 4, batch_first=True), nn.Identity(), nn.LSTM(4, 4, batch_first=True))

    class Outputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = model[0], model[2]

        def forward(self, x):
            return self.b(self.a(x)[0])[0]

    s = analyze(Outputs(), example=torch.randn(2, 5, 4))
    assert [(w, t) for w, t, _ in s.uncounted] == [("a", "lstm")]
    assert "2 call(s) of `lstm` in 2 places (the first named)" in s.uncounted[0][2]


def test_products_not_counted_are_said_in_a_warning_and_the_shares_are_of_what_was_counted():
    """The README promises uncounted products "named in a warning": an LSTM's were listed in ``uncounted`` and
    the table alone, and the footer read "1x1 convolutions: 100.0% of MACs" beside it. A batch_size given
    with an example of another batch was silently ignored."""
    from onebyone import OneByOneError

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.rnn = nn.Linear(4, 4), nn.LSTM(4, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(self.proj(x))[0]

    with pytest.warns(UserWarning, match=r"analyze: 1 part\(s\) of Recurrent not counted .* rnn \(lstm\)"):
        s = analyze(Recurrent(), example=torch.randn(2, 5, 4))
    assert "1x1 convolutions: 100.0% of counted MACs" in s.footer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = analyze(nn.Linear(4, 4), example=torch.randn(2, 5, 4))
    assert "% of MACs" in clean.footer()
    with pytest.raises(OneByOneError, match="batch_size=4 was given with an example of batch 3"):
        analyze(nn.Conv2d(3, 3, 1), example=torch.randn(3, 3, 4, 4), batch_size=4)
    assert analyze(nn.Conv2d(3, 3, 1), example=torch.randn(3, 3, 4, 4)).batch_size == 3
