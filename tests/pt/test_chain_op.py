"""The fused chain as one torch operator (``onebyone::pointwise_chain``): torch's own opcheck, one node in
torch.compile's graph with the same outputs, plain ops under autograd and export."""
import pytest
import torch

from onebyone.torch import FusedPointwiseChain, SharedMLP
from onebyone.torch.fast.chain import pointwise_chain

from .test_compile import CASES, OP, chain, fresh_dynamo, graph_targets  # noqa: F401


@pytest.mark.parametrize("case", list(CASES))
def test_the_chain_operator_passes_torch_opcheck(case):
    """Schema, fake (meta) shapes and strides, and dispatch agree with the real kernel (torch's own checker)."""
    dim, pool, shape = CASES[case]
    fused, _ = chain(dim, pool)
    p = fused.plan
    x = torch.randn(shape)
    args = (x, [w.detach() for w in fused.weights], [b.detach() for b in fused.biases], ",".join(p.acts),
            p.pool or "", dim, p.tile)
    torch.library.opcheck(torch.ops.onebyone.pointwise_chain.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))



@pytest.mark.parametrize("case", list(CASES))
def test_compile_sees_a_chain_as_one_node_with_the_same_outputs(case):
    dim, pool, shape = CASES[case]
    fused, mlp = chain(dim, pool)
    x = torch.randn(shape)
    with torch.no_grad():
        targets = graph_targets(fused, x)
        assert targets.count(OP) == 1 and not any("conv" in t or "linear" in t for t in targets), targets
        got = torch.compile(fused, backend=lambda gm, _: gm.forward, fullgraph=True, dynamic=False)(x)
        torch.testing.assert_close(got, mlp(x), rtol=1e-5, atol=1e-5)



def test_under_autograd_and_export_a_chain_is_plain_ops():
    fused, mlp = chain(1, None)
    x = torch.randn(2, 5, 6, 6)
    fused.requires_grad_(True)
    assert OP not in graph_targets(fused, x)  # differentiable: the layer-by-layer ops
    fused.requires_grad_(False)
    ep = torch.export.export(fused, (x,))
    assert not any(OP in str(n.target) for n in ep.graph.nodes)  # an exported graph stays portable (ONNX)
    torch.testing.assert_close(ep.module()(x), mlp(x), rtol=1e-5, atol=1e-5)


def test_the_chain_operator_carries_nan_as_the_plain_layers_do():
    """What torch.compile runs of a chain: oneDNN's fused ReLU would turn NaN into 0; torch's products run then."""
    torch.manual_seed(0)
    chain = FusedPointwiseChain.from_shared_mlp(SharedMLP((4, 8, 6), pool=None)).eval()
    x = torch.randn(2, 4, 10)
    x[0, 1, 3] = float("nan")
    p = chain.plan
    with torch.no_grad():
        got = pointwise_chain(x, list(chain.weights), list(chain.biases), ",".join(p.acts), "", 1, p.tile)
        want = chain.plain(x)
    assert want.isnan().any() and torch.equal(got.isnan(), want.isnan())
    torch.testing.assert_close(got, want, equal_nan=True)
