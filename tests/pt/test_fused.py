"""FusedPointwiseChain and optimize(): the same numbers as the plain layers, on every layout, pool and tile."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from onebyone import OneByOneError, chain_plan
from onebyone.torch import ChannelBatchNorm, FusedPointwiseChain, Pointwise, SharedMLP
from onebyone.torch.fast import chain as FU
from onebyone.torch.fast.packed import input_key

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "identity": nn.Identity}


def chain_layers(widths, acts, norm, seed):
    torch.manual_seed(seed)
    layers = []
    for i, o, a in zip(widths, widths[1:], acts):
        layers.append(Pointwise(i, o))
        if norm:
            bn = ChannelBatchNorm(o)
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.normal_()
            layers.append(bn)
        layers.append(ACTS[a]())
    return nn.Sequential(*layers).eval()


def plain(seq, x, pool):
    y = seq(x)  # (B, O, *S)
    if pool is None:
        return y
    y = y.flatten(2)
    return y.amax(2) if pool == "max" else y.mean(2)


@given(
    widths=st.lists(st.integers(1, 40), min_size=2, max_size=5),
    acts=st.data(),
    pool=st.sampled_from([None, "max", "mean"]),
    tile=st.sampled_from([1, 7, 64, 4096]),
    spatial=st.sampled_from([(13,), (5, 6), (1,)]),
    norm=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 99),
)
def test_fused_equals_plain(widths, acts, pool, tile, spatial, norm, dtype, seed):
    n = len(widths) - 1
    kernels = acts.draw(st.lists(st.sampled_from(list(FU.KERNELS)), min_size=n, max_size=n))  # forced per layer
    acts = acts.draw(st.lists(st.sampled_from(list(ACTS)), min_size=n, max_size=n))
    seq = chain_layers(widths, acts, norm, seed).to(dtype)
    x = torch.randn(3, widths[0], *spatial, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    fused = FusedPointwiseChain.from_layers(list(seq), pool=pool, tile=tile)
    fused.kernels[input_key(x)] = tuple(kernels)  # oneDNN's fall back to the default where they cannot run
    with torch.no_grad():
        want, got = plain(seq, x, pool), fused(x)
    assert got.shape == want.shape
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(1.0, float(want.abs().max())))


def test_fused_reference_plan_and_channels_last_and_autograd():
    seq = chain_layers((5, 16, 8), ("relu", "gelu"), True, 0)
    fused = FusedPointwiseChain.from_layers(list(seq), pool="max", tile=32)
    x = torch.randn(2, 5, 9, 7)
    rows = x.movedim(1, -1).reshape(2, -1, 5).double().numpy()  # (B, P, C)
    ws = [w.detach().double().flatten(1).numpy() for w in fused.weights]
    bs = [b.detach().double().numpy() for b in fused.biases]
    with torch.no_grad():
        ref = chain_plan.run_chain(rows, ws, bs, fused.plan)  # the NumPy executor of the same plan
        np.testing.assert_allclose(fused(x).numpy(), ref, rtol=1e-5, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused(cl), fused(x))
    xg = x.clone().requires_grad_(True)
    y = fused(xg)  # autograd: the plain path, differentiable
    y.sum().backward()
    assert xg.grad is not None and fused.weights[0].grad is not None
    torch.testing.assert_close(y.detach(), plain(seq, x, "max"), rtol=1e-5, atol=1e-5)


def test_a_chain_gives_the_memory_format_a_torch_conv_gives():
    """Contiguous for a plain (B, C, L) or (B, C, H, W) input, so that code may ``view`` it as it could the
    conv's output (optimize's check once failed inside such a ``view``); channels_last for a channels_last
    input; the same from the int8 chain and the fake the compiler traces."""
    from onebyone.torch import optimize
    from onebyone.torch.fast.int8_chain import Int8PointwiseChain, chain_ranges

    torch.manual_seed(0)
    for make, shape in ((nn.Conv1d, (2, 8, 10)), (nn.Conv2d, (2, 8, 5, 4))):
        chain = FusedPointwiseChain.from_layers([make(8, 16, 1), nn.ReLU(), make(16, 4, 1)]).eval()
        x = torch.randn(shape)
        forms = (chain, Int8PointwiseChain(chain, chain_ranges(chain, [x])[id(chain)]))
        for form in forms:
            with torch.no_grad():
                assert form(x).is_contiguous() and form(x).view(2, -1).shape == (2, 4 * x[0, 0].numel())
        with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = FU.pointwise_chain(mode.from_tensor(x), [w.detach() for w in chain.weights],
                                      [b.detach() for b in chain.biases], "relu,identity", "", 1, 64)
            assert fake.is_contiguous()
    cl = torch.randn(2, 8, 5, 4).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert chain(cl).is_contiguous(memory_format=torch.channels_last)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv1d(8, 16, 1), nn.ReLU(), nn.Conv1d(16, 4, 1))

        def forward(self, x):
            y = self.body(x)
            return y.view(y.size(0), -1)

    opt, report = optimize(Flat().eval(), torch.randn(2, 8, 10), passes=["chains", "check"])
    assert any("FusedPointwiseChain" in c for c in report.changed)


class _Reads(nn.Module):
    """Two 1x1 Conv1d (a chain) whose output is read by ``read`` (the model's output where ``read`` returns it)."""

    def __init__(self, read):
        super().__init__()
        self.mlp, self.read = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 8, 1)), read
        self.after = SharedMLP((8, 4), pool="max")

    def forward(self, x):  # (B, 3, N)
        return self.read(self, self.mlp(x))


READERS = {  # how the chain's output is read -> may it be left as its rows lie?
    "a chain, and bmm after a transpose": (lambda m, y: m.after(y) + torch.bmm(y.transpose(1, 2), y).sum(2)[:, :4],
                                           True),
    "relu, then a chain": (lambda m, y: m.after(torch.relu(y)), True),
    "view": (lambda m, y: m.after(y) + y.view(y.shape[0], -1)[:, :4], False),
    "add, then view": (lambda m, y: m.after(y) + (y + 1).view(y.shape[0], -1)[:, :4], False),
    "its strides": (lambda m, y: m.after(y if y.is_contiguous() else y.contiguous()), False),
    "a view by .mT": (lambda m, y: m.after(y) + y.mT.sum(1)[:, :4], False),
    "chunk, then view": (lambda m, y: m.after(y) + y.chunk(2, 1)[1].view(y.shape[0], -1)[:, :4], False),
    "split, then a chain": (lambda m, y: m.after(torch.cat(y.split(4, 1), 1)), False),
    "the model's output": (lambda m, y: y, False),
}


@pytest.mark.parametrize("how", list(READERS))
def test_a_chain_output_is_left_as_its_rows_lie_only_where_every_reader_takes_any_strides(how):
    """PointNet's mlp1 output went through a transpose into a contiguous (B, 64, N) tensor (2 MB) and the next
    chain moved it back: now a chain whose every reader takes any strides leaves it as its rows lie; where a
    reader might not (``view``, also after elementwise ops that keep the layout, a forward reading strides,
    the caller of the model, a view by a property), it stays contiguous; so does a chain on images (rows are
    channels_last there, which torch's convs hand on). Outputs, float and int8, as the model's."""
    from onebyone.torch.fast.int8_chain import Int8PointwiseChain, chain_ranges
    from onebyone.torch.fast.swaps import fuse_chains
    from onebyone.torch.rewrite_report import RewriteReport

    read, rows = READERS[how]
    torch.manual_seed(0)
    model, x = _Reads(read).eval(), torch.randn(2, 3, 20)
    fused = fuse_chains(copy_of(model), x, RewriteReport("t"))
    chain = fused.mlp[0]
    assert isinstance(chain, FusedPointwiseChain) and chain.rows_out is rows
    with torch.no_grad():
        assert chain(x).is_contiguous() is not rows  # a (B, 8, N) view of (B, N, 8) rows where left
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
        q = Int8PointwiseChain(chain, chain_ranges(chain, [x])[id(chain)])
        assert q.rows_out is rows and q(x).is_contiguous() is not rows


def test_a_chain_whose_readers_cannot_be_recorded_keeps_torchs_layout_and_says_so(monkeypatch):
    from onebyone.torch.fast import swaps
    from onebyone.torch.rewrite_report import RewriteReport

    def refuse(model, x):
        raise RuntimeError("no record here")

    monkeypatch.setattr(swaps, "record_calls", refuse)
    model, report = _Reads(READERS["relu, then a chain"][0]).eval(), RewriteReport("t")
    fused = swaps.fuse_chains(copy_of(model), torch.randn(2, 3, 20), report)
    assert isinstance(fused.mlp[0], FusedPointwiseChain) and not fused.mlp[0].rows_out
    assert any(k == "chain output layouts" and "no record here" in why for k, why in report.skipped)


def test_a_chain_on_images_keeps_torchs_layout_whatever_reads_it():
    """On images a chain's rows are channels_last, which torch's convs and pools hand on: even read by another
    chain alone, its output stays as a torch conv gives it."""
    from onebyone.torch.fast.swaps import fuse_chains
    from onebyone.torch.rewrite_report import RewriteReport

    class Images(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1))
            self.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).mean((2, 3))

    fused = fuse_chains(Images().eval(), torch.randn(2, 3, 6, 6), RewriteReport("t"))
    assert isinstance(fused.a[0], FusedPointwiseChain) and not fused.a[0].rows_out


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def test_pointnet_mlp1_output_is_left_as_its_rows_lie():
    """The case it is for: PointNet's mlp1 feeds the feature transform's chain and a bmm; the other chains pool."""
    from onebyone.torch.fast.swaps import fuse_chains
    from onebyone.torch.rewrite_report import RewriteReport
    from onebyone.zoo import create_model

    torch.manual_seed(0)
    model, x = create_model("pointnet_cls").eval(), torch.randn(2, 3, 64)
    report = RewriteReport("t")
    fused = fuse_chains(copy_of(model), x, report)
    assert fused.mlp1.rows_out and "mlp1: output left as its rows lie (its readers take any strides)" in report.changed
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_fused_repacks_after_a_weight_edit_and_copies_and_pickles():
    import copy
    import pickle

    seq = chain_layers((5, 16, 8), ("relu", "identity"), False, 0)
    chain = FusedPointwiseChain.from_layers(list(seq), pool="max", tile=32)
    x = torch.randn(2, 5, 50)
    rows = x.movedim(1, -1).reshape(-1, 5)
    with torch.no_grad():
        chain(x)  # packs the float32 weights for oneDNN
        chain.weights[0].mul_(2)  # in place: the packed copies are stale now
        seq[0].weight.mul_(2)
        torch.testing.assert_close(chain(x), plain(seq, x, "max"), rtol=1e-5, atol=1e-5)
        w, b = chain.weights[0], chain.biases[0]
        packed = FU._pack(list(chain.weights), chain.plan.tile)[0]
        want = torch.relu(rows @ seq[0].weight.flatten(1).t() + b)
        for name in FU.kernels_for(rows, w):  # every kernel the tile loop may run here, on the edited weights
            got = FU.KERNELS[name](rows.clone(), w, b, "relu", packed)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        chain.kernels[input_key(x)] = ("conv", "addmm")
        for other in (copy.deepcopy(chain), pickle.loads(pickle.dumps(chain))):
            torch.testing.assert_close(other(x), chain(x))
            assert other.kernels == chain.kernels  # the choice travels with the chain; the packed copies do not
            assert len(other._packed) == 0
    assert all(not k.startswith("_packed") for k in chain.state_dict())


def test_shared_mlp_channel_last_and_linear_chains():
    torch.manual_seed(0)
    mlp = SharedMLP((3, 32, 64), norm="batch", pool="avg", channel_dim=-1).eval()
    x = torch.randn(4, 100, 3)
    with torch.no_grad():
        torch.testing.assert_close(FusedPointwiseChain.from_shared_mlp(mlp, tile=16)(x), mlp(x), rtol=1e-5, atol=1e-5)
        lin = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3)).eval()
        z = torch.randn(2, 5, 6)
        torch.testing.assert_close(FusedPointwiseChain.from_layers(list(lin), tile=4)(z), lin(z), rtol=1e-5, atol=1e-5)


def test_bad_chains_are_named():
    with pytest.raises(OneByOneError, match=r"cannot fuse layer 1 \(MaxPool2d\)"):
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.MaxPool2d(2)])
    with pytest.raises(OneByOneError, match="training mode"):
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.BatchNorm2d(4)])
    with pytest.raises(
        OneByOneError, match=r"cannot fuse layer 1 \(GELU\).*GELU \(erf\)"
    ):  # oneDNN's gelu is the erf one
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.GELU(approximate="tanh")])
    with pytest.raises(OneByOneError, match="must start with a pointwise layer"):
        FusedPointwiseChain.from_layers([nn.ReLU(), Pointwise(3, 4)])
    with pytest.raises(OneByOneError, match=r"start with a pointwise layer; layer 0 \(Conv2d\) comes first"):
        FusedPointwiseChain.from_layers([nn.Conv2d(3, 4, 3)])
    chain = FusedPointwiseChain.from_layers([Pointwise(3, 4)])
    with pytest.raises(OneByOneError, match=r"expects 3 channels on dim 1, got input of shape \(2, 5, 8\)"):
        with torch.no_grad():
            chain(torch.zeros(2, 5, 8))


def test_tiles_cover_every_row_once():
    for n_samples, n_points, tile in [(3, 10, 4), (5, 3, 7), (1, 1, 1), (4, 8, 8)]:
        seen = []
        for r0, n, s0, k in chain_plan.tiles(n_samples, n_points, tile):
            assert n <= max(tile, n_points) and (k == 1 or n == k * n_points)
            seen += list(range(r0, r0 + n))
        assert seen == list(range(n_samples * n_points))


def test_a_chain_of_torch_convs_takes_one_sample_without_its_batch_axis_as_they_do():
    """nn.Conv2d takes (C, H, W) and nn.Conv1d (C, L): the chain made of them, float or int8, answers such an
    input as they do (it once read C as the batch and H as the channels: wrong numbers, or a false refusal)."""
    from onebyone.torch import optimize
    from onebyone.torch.fast.int8_chain import Int8PointwiseChain, chain_ranges

    torch.manual_seed(0)
    for make, shape in ((nn.Conv2d, (8, 8, 12)), (nn.Conv2d, (8, 5, 12)), (nn.Conv1d, (8, 12))):
        model = nn.Sequential(make(8, 16, 1), nn.ReLU(), make(16, 8, 1)).eval()
        opt, report = optimize(model, torch.randn(2, *shape), passes=["chains", "check"])
        chain = opt if isinstance(opt, FusedPointwiseChain) else next(
            m for m in opt.modules() if isinstance(m, FusedPointwiseChain))
        x = torch.randn(shape)
        int8 = Int8PointwiseChain(chain, chain_ranges(chain, [x[None]])[id(chain)])
        with torch.no_grad():
            want = model(x)
            torch.testing.assert_close(opt(x), want, rtol=1e-4, atol=1e-5)
            assert int8(x).shape == want.shape and (int8(x) - want).abs().max() < 0.05 * want.abs().max()
