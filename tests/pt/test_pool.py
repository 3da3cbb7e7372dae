"""MaxPool: nn.MaxPool2d that may run as a max of strided views (no index tensor), the same values."""
import copy
import pickle

import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch.fast import MaxPool, optimize
from onebyone.torch.fast import pool as P
from onebyone.torch.fast.packed import input_key

from .cpus import REWRITES

POOLS = [  # (kernel, stride, padding, ceil_mode)
    (3, 2, 0, True), (3, 2, 1, False), (2, 2, 0, False), (3, 1, 1, False), (5, 3, 2, True),
    ((3, 2), (2, 1), (1, 0), True), (1, 1, 0, False), (2, None, 0, True),
]


@pytest.mark.parametrize("k,s,p,ceil", POOLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", list(P.KERNELS))
def test_maxpool_equals_nn_maxpool2d_with_either_kernel(kernel, k, s, p, ceil, dtype, cpu, monkeypatch):
    ran = []
    counted = {n: (lambda *a, n=n, fn=fn: ran.append(n) or fn(*a)) for n, fn in P.KERNELS.items()}
    monkeypatch.setattr(P, "KERNELS", counted)
    torch.manual_seed(0)
    ref = nn.MaxPool2d(k, s, p, ceil_mode=ceil)
    fast = MaxPool(ref)
    for h, w in [(111, 111), (7, 9), (8, 8), (13, 6)]:
        x = torch.randn(2, 5, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x[0, 1, 0, 0], x[1, 2, h - 1, w - 1] = float("nan"), float("-inf")  # NaN spreads alike; -inf stays
        fast.kernels[input_key(x)] = kernel
        ran.clear()
        want, got = ref(x), fast(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
        assert got.is_contiguous(memory_format=torch.channels_last)  # the layout the next conv wants
        fast_path = cpu.onednn and (dtype == torch.float32 or cpu.bf16)  # else nn.MaxPool2d's own forward
        assert ran == ([kernel] if fast_path else [])


def test_maxpool_never_times_and_keeps_autograd_and_other_layouts_plain():
    pool = MaxPool(nn.MaxPool2d(3, 2))
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(pool(x), nn.MaxPool2d(3, 2)(x))
    assert pool.kernels == {}  # a pool called directly runs its default and chooses nothing
    pool.tune(x, lambda cands: "max of views")  # what optimize does, with a chooser of its own
    assert pool.kernels == {input_key(x): "max of views"}
    xg = x.clone().requires_grad_()
    pool(xg).sum().backward()  # under autograd: F.max_pool2d, whose indices route the gradient
    want = x.clone().requires_grad_()
    nn.MaxPool2d(3, 2)(want).sum().backward()
    assert torch.equal(xg.grad, want.grad)
    for other in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert other.kernels == pool.kernels  # the choice travels with the layer


def test_maxpool_refuses_what_it_cannot_run_and_optimize_says_so():
    with pytest.raises(OneByOneError, match=r"dilation 1 that returns no indices, got MaxPool2d"):
        MaxPool(nn.MaxPool2d(3, dilation=2))
    with pytest.raises(OneByOneError, match="returns no indices"):
        MaxPool(nn.MaxPool2d(2, return_indices=True))
    small = torch.randn(1, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="Output size is too small"):  # torch's own words, as nn.MaxPool2d's
        MaxPool(nn.MaxPool2d(5, 2))(small)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3),
                          nn.MaxPool2d(3, dilation=2)).eval()
    x = torch.randn(2, 3, 24, 24)
    fast, report = optimize(model, x, passes=REWRITES)
    assert isinstance(fast.model[2] if hasattr(fast, "model") else fast[2], MaxPool)
    assert any(name == "4" and "dilation" in why for name, why in report.skipped)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
