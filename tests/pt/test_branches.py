"""merge_branches against the blocks it was not written for: RepVGG, ACNet, Diverse Branch Block and
MobileOne written here from their papers' descriptions, with random BatchNorm statistics; each merged
block gives the block's outputs (1e-5 in float32, 1e-10 in float64); what is not a sum of linear maps of
one tensor is left alone, with the reason."""
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch.branches import merge_branches
from onebyone.torch.capture import trace


def bn(c):
    b = nn.BatchNorm2d(c)
    with torch.no_grad():
        b.running_mean.uniform_(-1, 1), b.running_var.uniform_(0.5, 2), b.weight.uniform_(0.5, 1.5)
        b.bias.uniform_(-0.5, 0.5)
    return b


def conv_bn(cin, cout, k, stride=1, padding=0, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False), bn(cout))


class RepVGG(nn.Module):
    """RepVGG's training block: 3x3 conv + BN, 1x1 conv + BN, and a BN identity, summed, then ReLU."""

    def __init__(self, c, stride=1):
        super().__init__()
        self.dense, self.pw = conv_bn(c, c, 3, stride, 1), conv_bn(c, c, 1, stride)
        self.identity = bn(c) if stride == 1 else None

    def forward(self, x):
        y = self.dense(x) + self.pw(x)
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


class ACNet(nn.Module):
    """ACNet's asymmetric convolution block: 3x3, 1x3 and 3x1 convs, each + BN, summed."""

    def __init__(self, cin, cout):
        super().__init__()
        self.square, self.hor = conv_bn(cin, cout, 3, padding=1), conv_bn(cin, cout, (1, 3), padding=(0, 1))
        self.ver = conv_bn(cin, cout, (3, 1), padding=(1, 0))

    def forward(self, x):
        return self.square(x) + self.hor(x) + self.ver(x)


class DBB(nn.Module):
    """Diverse Branch Block: 1x1, 1x1 -> kxk, 1x1 -> average pool, kxk; each + BN."""

    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.kxk, self.one = conv_bn(cin, cout, k, padding=k // 2), conv_bn(cin, cout, 1)
        self.one_kxk = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.Conv2d(cout, cout, k, padding=k // 2,
                                                                                   bias=False), bn(cout))
        self.one_avg = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(k, 1, k // 2), bn(cout))

    def forward(self, x):
        return self.kxk(x) + self.one(x) + self.one_kxk(x) + self.one_avg(x)


class MobileOne(nn.Module):
    """MobileOne's depthwise stage: k over-parameterized 3x3 branches, a 1x1 scale branch, a BN identity."""

    def __init__(self, c, k=3):
        super().__init__()
        self.branches = nn.ModuleList(conv_bn(c, c, 3, padding=1, groups=c) for _ in range(k))
        self.scale, self.identity = conv_bn(c, c, 1, groups=c), bn(c)

    def forward(self, x):
        out = self.scale(x) + self.identity(x)
        for b in self.branches:
            out = out + b(x)
        return nn.functional.relu(out)


BLOCKS = {"RepVGG": (lambda: RepVGG(8), 8), "RepVGG stride 2": (lambda: RepVGG(8, stride=2), 8),
          "ACNet": (lambda: ACNet(6, 10), 6), "DBB": (lambda: DBB(6, 8), 6), "DBB 5x5": (lambda: DBB(6, 8, 5), 6),
          "MobileOne": (lambda: MobileOne(8), 8)}


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_each_papers_block_merges_into_one_conv_with_the_same_outputs(name, dtype, tol):
    torch.manual_seed(0)
    make, cin = BLOCKS[name]
    block = make().eval().to(dtype)
    x = torch.randn(2, cin, 11, 13, dtype=dtype)
    merged, report = merge_branches(block, x)
    assert len(report.changed) == 1 and " -> one " in report.changed[0], report
    convs = [m for m in merged.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and not any(isinstance(m, nn.BatchNorm2d) for m in merged.modules())
    with torch.no_grad():
        want, got = block(x), merged(x)
    assert float((got - want).abs().max()) <= tol * float(want.abs().max())
    assert report.params_after < report.params_before


def test_a_resnet_basic_block_is_left_alone_and_says_why():
    class Basic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = conv_bn(8, 16, 3, 2, 1), conv_bn(16, 16, 3, 1, 1)
            self.shortcut = conv_bn(8, 16, 1, 2)  # a 1x1 conv + BN beside a conv stack with a ReLU inside

        def forward(self, x):
            return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))

    model = Basic().eval()
    merged, report = merge_branches(model, torch.randn(2, 8, 12, 12))
    assert report.changed == [] and len(report.skipped) == 1
    assert "branches read different tensors" in report.skipped[0][1] and "nonlinearity" in report.skipped[0][1]


def test_a_block_in_training_mode_is_refused_with_the_fix():
    with pytest.raises(OneByOneError, match=r"training mode.*model.eval\(\)"):
        merge_branches(RepVGG(4), torch.randn(1, 4, 6, 6))


def test_windows_that_cannot_be_centred_alike_are_skipped_with_the_reason():
    class EvenAndOdd(nn.Module):  # a 3x3 and a 2x2 window, both stride 2: the same shapes, no common centre
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 4, 2, 2)

        def forward(self, x):
            return self.a(x) + self.b(x)

    merged, report = merge_branches(EvenAndOdd().eval(), torch.randn(1, 4, 12, 12))
    assert report.changed == [] and "not centred alike" in report.skipped[0][1]


@pytest.mark.parametrize("conv,into", [
    (lambda: nn.Conv2d(8, 8, 3, padding=1), ("kxk", "1x1", "identity")),
    (lambda: nn.Conv2d(6, 10, 5, stride=2, padding=2), ("kxk", "1x1")),
    (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8), ("kxk", "1x1", "identity")),  # depthwise
])
def test_expand_then_merge_gives_the_conv_back(conv, into):
    from onebyone.torch import expand_branches

    torch.manual_seed(0)
    c = conv().eval()
    x = torch.randn(2, c.in_channels, 12, 12)
    expanded = expand_branches(c, into=into)
    assert len(expanded.branches) == len(into)
    merged, report = merge_branches(expanded, x)
    with torch.no_grad():
        torch.testing.assert_close(expanded(x), c(x), rtol=1e-5, atol=1e-5)  # the branches sum to the conv
        torch.testing.assert_close(merged(x), c(x), rtol=1e-5, atol=1e-5)  # and merge back into it
    (back,) = [m for m in merged.modules() if isinstance(m, nn.Conv2d)]
    torch.testing.assert_close(back.weight, c.weight, rtol=1e-5, atol=1e-6)


def test_expand_refuses_what_it_cannot_split():
    from onebyone.torch import expand_branches

    with pytest.raises(OneByOneError, match="an identity branch needs as many output channels"):
        expand_branches(nn.Conv2d(4, 8, 3, padding=1))
    with pytest.raises(OneByOneError, match="into names branches among"):
        expand_branches(nn.Conv2d(4, 4, 3, padding=1), into=("1x1",))


class ShapeChecked(nn.Module):
    """A block behind a check on the input's shape: Python control flow that torch.fx cannot trace."""

    def __init__(self, block, channels):
        super().__init__()
        self.block, self.channels = block, channels

    def forward(self, x):
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels")
        return self.block(x)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_a_model_fx_cannot_trace_is_merged_from_one_eager_run(name):
    torch.manual_seed(0)
    make, cin = BLOCKS[name]
    block = make().eval()
    model, x = ShapeChecked(block, cin).eval(), torch.randn(2, cin, 11, 13)
    with pytest.raises(OneByOneError, match="could not trace"):
        trace(model, x)
    merged, report = merge_branches(model, x)
    assert "eager run" in " ".join(report.notes) and len(report.changed) == 1, report
    (conv,) = [m for m in merged.modules() if isinstance(m, nn.Conv2d)]
    (traced,) = [m for m in merge_branches(block, x)[0].modules() if isinstance(m, nn.Conv2d)]
    torch.testing.assert_close(conv.weight, traced.weight, rtol=0, atol=0)  # the same merge fx's graph gives
    torch.testing.assert_close(conv.bias, traced.bias, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):  # the rest of the model is untouched: its check still runs
        merged(torch.randn(1, cin + 1, 5, 5))


def test_an_eager_sum_that_no_module_computes_alone_is_skipped_with_the_reason():
    class ScaledSum(nn.Module):  # the sum, then more work in the same forward: no module's call is the sum
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x) + self.b(x)
            return y * 2 if x.shape[-1] > 1 else y

    model, x = ScaledSum().eval(), torch.randn(1, 4, 6, 6)
    merged, report = merge_branches(model, x)
    assert report.changed == [] and "no module's call computes exactly this sum" in report.skipped[0][1]
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=0, atol=0)


def test_an_eager_sum_inside_a_forward_that_reads_shapes_is_skipped_with_the_reason():
    class Branchy(nn.Module):  # the sum is the module's output on this input; on another it would not be
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.a(x) + self.b(x) if x.shape[-1] > 4 else self.a(x)

    model, x = Branchy().eval(), torch.randn(1, 4, 6, 6)
    merged, report = merge_branches(model, x)
    assert report.changed == [] and "reads a shape" in report.skipped[0][1]
    with torch.no_grad():
        small = torch.randn(1, 4, 3, 3)
        torch.testing.assert_close(merged(small), model(small), rtol=0, atol=0)


class PaddedPool(nn.Module):
    """A 1x1 conv with padding before a strided pool, beside a strided 3x3 conv: windows that do not align."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.pool = nn.Conv2d(4, 4, 3, stride=3), nn.Conv2d(4, 4, 1, padding=1), nn.AvgPool2d(3, 3)

    def forward(self, x):
        return self.a(x) + self.pool(self.b(x))


def test_a_zero_example_cannot_fool_the_self_check():
    """Every rewrite and optimize check on the example and on a seeded random probe of its shapes: an all-zero
    example proves nothing, and a sum whose windows do not align is skipped, named."""
    from onebyone.torch import fold_batchnorm, merge_pointwise, optimize, reparameterize

    from .cpus import REWRITES

    torch.manual_seed(0)
    model = PaddedPool().eval()
    zeros, x = torch.zeros(1, 4, 9, 9), torch.randn(2, 4, 9, 9)
    merged, report = merge_branches(model, example=zeros)
    assert [n for n, _ in report.skipped] == ["add"] and not report.changed
    for rewrite in (merge_branches, reparameterize, fold_batchnorm, merge_pointwise):
        new, _ = rewrite(model, example=zeros)
        with torch.no_grad():
            assert (new(x) - model(x)).abs().max() <= 1e-5 * float(model(x).abs().max())
    opt, _ = optimize(model, zeros, passes=REWRITES)
    with torch.no_grad():
        assert (opt(x) - model(x)).abs().max() <= 1e-4 * float(model(x).abs().max())


def test_norms_without_affine_half_precision_and_keyword_models_merge():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3, affine=False)

        def forward(self, *, x):  # called with keywords only
            return self.a(x) + self.bn(x)

    torch.manual_seed(0)
    model = Block().eval()
    model.bn.running_mean.uniform_(-1, 1), model.bn.running_var.uniform_(0.5, 2)
    x = {"x": torch.randn(2, 3, 8, 8)}
    merged, report = merge_branches(model, example=x)
    assert len(report.changed) == 1 and sum(isinstance(m, nn.Conv2d) for m in merged.modules()) == 1
    with torch.no_grad():
        assert (merged(**x) - model(**x)).abs().max() <= 1e-5 * model(**x).abs().max()
    half, report = merge_branches(model.half(), example={"x": x["x"].half()})  # weights rounded to float16
    assert len(report.changed) == 1 and "rounded to the model's own dtype" in " ".join(report.notes)


def test_a_scripted_pointwise_computes_what_the_layer_does():
    from onebyone.torch import Pointwise

    for layer, x in ((Pointwise(3, 5), torch.randn(2, 3, 4, 4)), (Pointwise(3, 5), torch.randn(2, 3, 7)),
                     (Pointwise(3, 5, channel_dim=-1), torch.randn(2, 7, 3)), (Pointwise(4, 6, groups=2),
                                                                               torch.randn(1, 4, 3, 3))):
        torch.testing.assert_close(torch.jit.script(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


class LayerScaled(nn.Module):
    """x + gamma * (conv(x) - bn(x)) with gamma of ``shape``: per channel when (C, 1, 1), along W when (W,)."""

    def __init__(self, shape):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.gamma = nn.Parameter(torch.rand(shape) + 0.5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1), self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return x + self.gamma * (self.conv(x) - 2.0 * self.bn(x))


@pytest.mark.parametrize("check_shape", [False, True], ids=["fx", "eager"])
def test_a_scaled_difference_of_branches_merges_and_a_scale_along_width_does_not(check_shape):
    x = torch.randn(2, 4, 6, 6)
    wrap = (lambda b: ShapeChecked(b, 4).eval()) if check_shape else (lambda b: nn.Sequential(b).eval())
    model = wrap(LayerScaled((4, 1, 1)))
    merged, report = merge_branches(model, x)
    assert len(report.changed) == 1 and "minus" not in report.changed[0] and "scaled" in report.changed[0]
    assert sum(isinstance(m, nn.Conv2d) for m in merged.modules()) == 1 and not any(
        isinstance(m, nn.BatchNorm2d) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    along_w = wrap(LayerScaled((6,)))  # broadcasts over W: not one conv
    inner, report = merge_branches(along_w, x)  # the outer sum is named; in fx's graph the difference merges
    assert [why for n, why in report.skipped if n.rstrip(")").endswith("add")] == [report.skipped[0][1]]
    assert "different tensors" in report.skipped[0][1]
    assert ["-2 x identity + BatchNorm" in c for c in report.changed] == ([] if check_shape else [True])
    with torch.no_grad():
        torch.testing.assert_close(inner(x), along_w(x), rtol=1e-5, atol=1e-5)


def test_inplace_that_cannot_be_kept_warns_that_the_model_given_is_unchanged():
    """A merge gives a traced GraphModule, a new class: ``inplace=True`` returned it with a note alone, and a
    caller who drops the result (as after timm's ``reparameterize_model(model, inplace=True)``) kept the
    training form unsaid."""
    from onebyone.torch import reparameterize

    block, x = RepVGG(4).eval(), torch.randn(1, 4, 6, 6)
    with pytest.warns(UserWarning, match=r"reparameterize: inplace=True: .* the model given is unchanged: use the "
                                         r"model returned"):
        merged, _ = reparameterize(block, x, inplace=True)
    assert merged is not block and isinstance(block.pw[1], nn.BatchNorm2d)


def test_a_merge_that_makes_the_model_larger_says_so():
    """One 3x3 conv summed with three other branches: each merge holds its own copy (params 208 -> 444), which
    the report showed only as numbers."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 3, padding=1)
            self.p, self.q, self.r = (nn.Conv2d(4, 4, 1) for _ in range(3))

        def forward(self, x):
            y = self.c(x)
            return torch.cat([y + self.p(x), y + self.q(x), y + self.r(x)], 1)

    x = torch.randn(1, 4, 6, 6)
    merged, report = merge_branches(Shared().eval(), x)
    assert report.params_after > report.params_before
    assert any(n.startswith(f"parameters grew from {report.params_before:,} to {report.params_after:,}")
               for n in report.notes)
    _, folded = merge_branches(RepVGG(4).eval(), x)
    assert not any(n.startswith("parameters grew") for n in folded.notes)


def test_same_padding_merges_as_its_number_and_an_even_same_kernel_is_skipped():
    """``padding='same'`` (torch's spelling of 1 for a 3x3) beside ``padding=1`` was skipped as 'string padding'."""
    class Same(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 4, k, padding=k // 2 if k % 2 else "same")

        def forward(self, x):
            return self.a(x) + self.b(x)

    x = torch.randn(2, 4, 7, 9)
    block = Same(1).eval()
    merged, report = merge_branches(block, x)
    assert len(report.changed) == 1 and sum(isinstance(m, nn.Conv2d) for m in merged.modules()) == 1
    with torch.no_grad():
        assert torch.allclose(merged(x), block(x), atol=1e-5)
    _, report = merge_branches(Same(2).eval(), x)
    assert not report.changed and "'same' padding of an even kernel" in str(report.skipped)


def test_the_layers_a_merge_makes_are_in_the_models_mode():
    """A merged conv was a fresh nn.Conv2d, in training mode inside an eval model: optimize then refused the
    rewritten model (its submodules in training mode), and a train-mode BatchNorm after it would have moved."""
    merged, _ = merge_branches(RepVGG(4).eval(), torch.randn(1, 4, 6, 6))
    assert not any(m.training for m in merged.modules())
