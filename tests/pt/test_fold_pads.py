"""``fold_pads``: a zero pad read by one conv becomes that conv's padding, before compiling."""
import torch

from onebyone.torch.fast import Compiled

from .test_compile import Padded, fresh_dynamo  # noqa: F401


def test_fold_pads_folds_only_zero_pads_even_on_both_sides_read_by_one_conv():
    from onebyone.torch.fast import fold_pads

    model = Padded().eval()
    x = torch.randn(2, 3, 12, 12)
    left = {}

    def backend(gm, inputs):
        fold_pads(gm)
        left["pads"] = sum(n.op == "call_function" and "pad" in str(n.target) for n in gm.graph.nodes)
        left["modules"] = sum(n.op == "call_module" for n in gm.graph.nodes)
        return gm.forward

    with torch.no_grad():
        got = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(x)
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    assert left == {"pads": 3, "modules": 0}, left  # the one-sided, the reflect and the twice-read pad



def test_compiled_model_with_padding_before_each_conv_keeps_its_outputs():
    model = Padded().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(Compiled(model)(x), model(x), rtol=1e-4, atol=1e-4)
