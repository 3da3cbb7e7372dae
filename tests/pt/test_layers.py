"""Pointwise and SharedMLP against nn.Conv2d / Conv1d / Linear and the NumPy shared-MLP form."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from onebyone import OneByOneError, forms
from onebyone.torch import ChannelBatchNorm, Pointwise, SharedMLP, pointwise


def test_state_dict_and_init_equal_conv2d_kernel_1():
    torch.manual_seed(7)
    conv = nn.Conv2d(12, 20, 1, groups=4)
    torch.manual_seed(7)
    pw = Pointwise(12, 20, groups=4)
    sd_c, sd_p = conv.state_dict(), pw.state_dict()
    assert {k: v.shape for k, v in sd_c.items()} == {k: v.shape for k, v in sd_p.items()}
    assert all(torch.equal(sd_c[k], sd_p[k]) for k in sd_c)  # same default init, same RNG draws
    other = Pointwise(12, 20, groups=4)
    other.load_state_dict(conv.state_dict())  # loads a Conv2d checkpoint
    assert torch.equal(other.weight, conv.weight)


@pytest.mark.parametrize("groups,stride", [(1, 1), (2, 1), (1, 2), (4, 3)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_pointwise_equals_the_torch_layers(groups, stride, dtype, tol):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 1, groups=groups, stride=stride).to(dtype)
    pw = Pointwise(8, 12, groups=groups, stride=stride).to(dtype)
    pw.load_state_dict(conv.state_dict())
    x = torch.randn(3, 8, 9, 7, dtype=dtype)
    with torch.no_grad():
        ref = conv(x)
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            assert (pw(inp) - ref).abs().max() <= tol * ref.abs().max()
        pts = torch.randn(2, 8, 50, dtype=dtype)
        c1 = nn.Conv1d(8, 12, 1, groups=groups, stride=stride).to(dtype)
        c1.weight.copy_(conv.weight[..., 0]), c1.bias.copy_(conv.bias)
        assert (pw(pts) - c1(pts)).abs().max() <= tol * 10
        last = Pointwise(8, 12, groups=groups, stride=stride, channel_dim=-1).to(dtype)
        last.load_state_dict(conv.state_dict())
        got = last(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        assert (got.permute(0, 3, 1, 2) - ref).abs().max() <= tol * ref.abs().max()


@pytest.mark.parametrize("groups", [1, 4])
def test_each_layout_runs_one_fixed_kernel_equal_to_conv2d(groups):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 5)
    w, b = torch.randn(24, 16 // groups, 1, 1), torch.randn(24)
    ref = torch.nn.functional.conv2d(x, w, b, groups=groups)  # (2, 24, 6, 5)
    cases = {"nchw": (x, 1, lambda y: y),
             "channels_last": (x.contiguous(memory_format=torch.channels_last), 1, lambda y: y),
             "(B, C, L)": (x.flatten(2), 1, lambda y: y.view(ref.shape)),
             "(B, C, D, H, W)": (x.unsqueeze(2), 1, lambda y: y.squeeze(2)),
             "(B, C)": (x[:, :, 0, 0], 1, lambda y: y),
             "(..., C)": (x.permute(0, 2, 3, 1), -1, lambda y: y.permute(0, 3, 1, 2))}
    for name, (inp, cd, back) in cases.items():
        want = ref[:, :, 0, 0] if name == "(B, C)" else ref
        got = back(pointwise(inp, w, b, 1, groups, cd))
        assert (got - want).abs().max() < 1e-4, name
    layer = Pointwise(16, 24, groups=groups)
    assert not [k for k in vars(layer) if k not in vars(nn.Module())] or set(vars(layer)) - set(vars(nn.Module())) == {
        "in_channels", "out_channels", "groups", "stride", "channel_dim"}  # no cached kernel or timing state


def test_gradients_and_double_backward():
    torch.manual_seed(0)
    pw = Pointwise(3, 4, groups=1).double()
    conv = nn.Conv2d(3, 4, 1).double()
    conv.load_state_dict(pw.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(pw(x).square().sum(), [x, pw.weight, pw.bias])
    g2 = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight, conv.bias])
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g1, g2))
    for cd, shape in ((1, (2, 3, 4, 4)), (1, (2, 3, 6)), (-1, (2, 5, 3))):
        layer = Pointwise(3, 2, channel_dim=cd).double()
        inp = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(layer, (inp,))
        assert torch.autograd.gradgradcheck(layer, (inp,))


def test_pointwise_bad_input():
    with pytest.raises(
        OneByOneError, match=r"Pointwise\(8, 4\) expects 8 channels on dim 1, got input of shape \(2, 5, 3, 3\)"
    ):
        Pointwise(8, 4)(torch.zeros(2, 5, 3, 3))
    with pytest.raises(OneByOneError, match=r"expects 8 channels on dim last, got input of shape \(2, 3, 5\)"):
        Pointwise(8, 4, channel_dim=-1)(torch.zeros(2, 3, 5))
    with pytest.raises(OneByOneError, match="groups=3 must divide in_channels=8"):
        Pointwise(8, 4, groups=3)
    with pytest.raises(OneByOneError, match="channel_dim must be 1 .* or -1 .*, got 2"):
        Pointwise(8, 4, channel_dim=2)
    assert repr(Pointwise(8, 4, bias=False, stride=2)) == "Pointwise(8, 4, bias=False, stride=2)"


def _layers(mlp):
    pws = [m for m in mlp.modules() if isinstance(m, Pointwise)]
    return [(p.weight.detach().double().numpy()[:, :, 0, 0], p.bias.detach().double().numpy()) for p in pws]


def test_empty_batches_and_one_vector_run_as_the_torch_layers():
    """A grouped Pointwise on an empty batch (its grouped conv over an empty (1, C, 0, 1) view raised) and a
    channels-last Pointwise on one (C,) vector (refused, though nn.Linear takes it) give the torch layers'
    shapes and values."""
    torch.manual_seed(0)
    grouped = Pointwise(6, 4, groups=2)
    conv = nn.Conv3d(6, 4, 1, groups=2)
    for x in (torch.randn(0, 6), torch.randn(0, 6, 2, 2, 2)):
        assert grouped(x).shape == conv(x.reshape(0, 6, 1, 1, 1) if x.dim() == 2 else x).shape[:x.dim()]
    last = Pointwise(6, 4, groups=2, channel_dim=-1)
    assert last(torch.randn(0, 5, 6)).shape == (0, 5, 4) and last(torch.randn(2, 0, 6)).shape == (2, 0, 4)
    dense = Pointwise(6, 12, channel_dim=-1)
    linear = nn.Linear(6, 12)
    linear.load_state_dict({"weight": dense.weight.detach().flatten(1), "bias": dense.bias.detach()})
    v = torch.randn(6)
    torch.testing.assert_close(dense(v), linear(v))


@pytest.mark.parametrize("pool", [None, "max", "avg"])
def test_shared_mlp_equals_the_per_point_numpy_form(pool):
    torch.manual_seed(0)
    mlp = SharedMLP((3, 16, 32), pool=pool).double().eval()
    pts = torch.randn(2, 40, 3, dtype=torch.float64)  # (B, N, C)
    ref = forms.shared_mlp_per_point(pts.numpy(), _layers(mlp))  # (B, N, 32), one point at a time
    ref = {None: ref, "max": ref.max(axis=1), "avg": ref.mean(axis=1)}[pool]
    with torch.no_grad():
        first = mlp(pts.transpose(1, 2)).numpy()  # channels on dim 1
        last_mlp = SharedMLP((3, 16, 32), pool=pool, channel_dim=-1).double().eval()
        last_mlp.load_state_dict(mlp.state_dict())
        last = last_mlp(pts).numpy()
    np.testing.assert_allclose(first if pool else first.transpose(0, 2, 1), ref, atol=1e-10)
    np.testing.assert_allclose(last, ref, atol=1e-10)


def test_shared_mlp_with_batch_norm_on_images_and_errors():
    mlp = SharedMLP((4, 8, 8), norm="batch", activation="gelu", pool="max")
    assert mlp(torch.randn(3, 4, 5, 5)).shape == (3, 8)
    assert isinstance(mlp.layers[1], ChannelBatchNorm) and mlp.layers[0].bias is None
    assert repr(mlp) == "SharedMLP((4, 8, 8), activation='gelu', norm='batch', pool='max')"
    with pytest.raises(OneByOneError, match="activation must be one of"):
        SharedMLP((3, 4), activation="swish")
    with pytest.raises(OneByOneError, match="pool must be one of"):
        SharedMLP((3, 4), pool="sum")
    with pytest.raises(OneByOneError, match="at least an input and an output width"):
        SharedMLP((3,))


def test_pointwise_uses_parametrized_weights():
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    layer = Pointwise(4, 6, bias=False).eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        plain = layer(x)
        parametrize.register_parametrization(layer, "weight", Double())
        torch.testing.assert_close(layer(x), 2 * plain)


def test_pointwise_answers_every_layout_and_follows_a_parametrized_bias():
    from torch.nn.utils import parametrize

    class Shift(torch.nn.Module):
        def forward(self, b):
            return b + 1

    torch.manual_seed(0)
    layer = Pointwise(5, 7).eval()
    x = torch.randn(2, 5, 6, 6)
    with torch.no_grad():
        for inp in (x, x, x.contiguous(memory_format=torch.channels_last), x[:1], x, x.flatten(2)):
            torch.testing.assert_close(
                layer(inp),
                torch.nn.functional.conv2d(inp.reshape(inp.shape[0], 5, 6, -1), layer.weight, layer.bias).reshape(
                    inp.shape[0], 7, *inp.shape[2:]
                ),
                rtol=1e-5,
                atol=1e-5,
            )
        plain = layer(x)
        parametrize.register_parametrization(layer, "bias", Shift())  # a bias computed on each call
        torch.testing.assert_close(layer(x), plain + 1)
    layer.train()
    xg = x.clone().requires_grad_(True)
    layer(xg).sum().backward()  # autograd takes the full path
    assert xg.grad is not None


def test_pointwise_fast_call_still_runs_hooks_added_later():
    torch.manual_seed(0)
    layer = Pointwise(4, 3).eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        plain = layer(x)
        torch.testing.assert_close(layer(x), plain)
        seen = []
        h1 = layer.register_forward_pre_hook(lambda m, args: (2 * args[0],))
        h2 = layer.register_forward_hook(lambda m, args, out: seen.append(out.shape))
        torch.testing.assert_close(layer(x), layer.forward(2 * x))  # the pre-hook doubled the input
        assert seen == [(2, 3, 5, 5)]
        h1.remove(), h2.remove()
        g = nn.modules.module.register_module_forward_hook(lambda m, args, out: out + 1)  # a global hook
        try:
            torch.testing.assert_close(layer(x), plain + 1)
        finally:
            g.remove()
        torch.testing.assert_close(layer(x), plain)
        torch.testing.assert_close(layer(x=x), plain)  # keywords go through nn.Module.__call__


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # deprecated, still what many users export with
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_torch_fx_traces_the_layers_into_graphs_that_compute_the_same(channel_dim):
    """torch.fx traces a SharedMLP (its Pointwise and ChannelBatchNorm layers too) whatever the input's rank:
    the branches on rank and layout are kept as calls, so one graph serves points and images alike."""
    torch.manual_seed(0)
    mlp = SharedMLP((3, 16, 32), norm="batch", pool="max", channel_dim=channel_dim).eval()
    with torch.no_grad():
        for m in mlp.modules():
            if isinstance(m, ChannelBatchNorm):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    graph = torch.fx.symbolic_trace(mlp)
    calls = [n for n in graph.graph.nodes if n.op == "call_function" and n.target is pointwise]
    assert len(calls) == 2  # each 1x1 conv one call of the functional form, its weight read from the model
    for shape in [(2, 3, 50), (2, 3, 5, 5)]:
        x = torch.randn(shape) if channel_dim == 1 else torch.randn(shape).movedim(1, -1)
        with torch.no_grad():
            torch.testing.assert_close(graph(x), mlp(x), rtol=0, atol=1e-6)
            unwatched = mlp(x)  # the max without its indices where no gradient is wanted: the same values
        assert torch.equal(unwatched, mlp(x.requires_grad_()).detach())
        traced = torch.jit.trace(mlp, x.detach())  # its check reruns the model in another grad mode
        torch.testing.assert_close(traced(x.detach()), unwatched, rtol=0, atol=0)


def test_an_activation_is_named_only_with_the_settings_of_the_registered_function():
    """An ELU of alpha 2 is not the registry's elu (it was named so: a fusion would run alpha 1)."""
    from onebyone.torch.activations import name_of

    named = [name_of(m) for m in (nn.ELU(), nn.ELU(alpha=2.0), nn.GELU(), nn.GELU("tanh"), nn.LeakyReLU(0.2),
                                  nn.ReLU(inplace=True), nn.Dropout(0.5).eval())]
    assert named == ["elu", None, "gelu", None, None, "relu", "identity"]


@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_torch_jit_script_compiles_the_layers_in_place_and_leaves_the_model_given_as_it_was(channel_dim, momentum):
    """torch.jit.script(SharedMLP(norm="batch")) runs what the eager model runs, on points and images, and in
    training mode moves the running statistics as eager does (the model's own buffers); the eager model keeps
    its own layers (TorchScript's __prepare_scriptable__ would swap them inside the model given)."""
    torch.manual_seed(0)
    mlp = SharedMLP((3, 16, 32), norm="batch", pool="max", channel_dim=channel_dim)
    for m in mlp.modules():
        if isinstance(m, ChannelBatchNorm):
            m.momentum = momentum
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    kinds = [type(m) for m in mlp.modules()]
    twin = copy.deepcopy(mlp)
    scripted = torch.jit.script(mlp)
    assert [type(m) for m in mlp.modules()] == kinds and isinstance(mlp.layers[0], Pointwise)
    for shape in [(2, 3, 50), (2, 3, 5, 5)]:
        x = torch.randn(shape) if channel_dim == 1 else torch.randn(shape).movedim(1, -1)
        for _ in range(2):  # training: batch statistics, running ones moved (twice: the average's count too)
            torch.testing.assert_close(scripted(x), twin(x), rtol=1e-5, atol=1e-5)
        for a, b in zip(mlp.buffers(), twin.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        scripted.eval(), twin.eval()
        torch.testing.assert_close(scripted(x), twin(x), rtol=1e-5, atol=1e-5)
        scripted.train(), twin.train()


@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 6), (2, 4, 6, 5), (2, 4, 3, 6, 5)])
def test_a_scripted_pointwise_computes_what_the_eager_one_does_with_groups_and_stride(shape, channel_dim):
    torch.manual_seed(0)
    x = torch.randn(shape) if channel_dim == 1 else torch.randn(shape).movedim(1, -1)
    for groups, stride in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        layer = Pointwise(4, 6, groups=groups, stride=stride, channel_dim=channel_dim).eval()
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.script(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mlp,shape,said", [
    (dict(widths=(3, 8)), (2, 4, 10), r"SharedMLP\(\(3, 8\)\) takes \(B, 3, N...\), got shape \(2, 4, 10\)"),
    (dict(widths=(3, 8), pool="max"), (2, 3), r"takes \(B, 3, N...\): positions to max-pool over, got shape \(2, 3\)"),
    (dict(widths=(3, 8), pool="avg", channel_dim=-1), (2, 3), r"takes \(B, N..., 3\): positions to avg-pool over"),
])
def test_shared_mlp_names_the_input_as_given_when_it_cannot_take_it(mlp, shape, said):
    """A wrong channel count was reported on the (B, C, N, 1) image SharedMLP makes inside; a pool over a
    (B, C) input raised an IndexError (a RuntimeError from flatten with channels last)."""
    from onebyone.torch import SharedMLP

    with pytest.raises(OneByOneError, match=said):
        SharedMLP(**mlp)(torch.randn(shape))
