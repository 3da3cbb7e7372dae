"""The eager record (``onebyone.torch.record``), the rewrites' view of a model fx cannot trace, against fx's
own graph of models fx can trace: the same modules in the same order, the same sums of the same values."""
import torch
import torch.nn.functional as F
from torch import nn

from onebyone.torch.capture import trace
from onebyone.torch.record import nodes, record_calls


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return F.relu(self.a(x) + self.b(x) + self.bn(x))


def is_add(n) -> bool:
    return n.op.startswith("call_") and getattr(n.target, "__name__", n.target) == "add"


def shape_of(n):
    meta = n.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def structure(graph_nodes) -> list:
    """Each module call and function as (kind, target name, the kinds and targets of its inputs, shape)."""
    def name(n):
        return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))

    def ref(a):
        return "input" if a.op == "placeholder" else name(a)

    return [(n.op, name(n), tuple(ref(a) for a in n.args if hasattr(a, "op")), shape_of(n))
            for n in graph_nodes if n.op not in ("placeholder", "output")]


def test_the_record_shows_what_fx_shows_of_a_traceable_model():
    model, x = nn.Sequential(Block(), Block()).eval(), torch.randn(2, 4, 6, 6)
    gm = trace(model, x)
    fx_view, eager = structure(gm.graph.nodes), nodes(record_calls(model, x))

    def calls(view):  # fx writes `a + b` as operator.add, the record as the tensor method: both an add
        return [("call" if op.startswith("call_f") or op.startswith("call_me") else op, *rest) for op, *rest in view]

    assert calls(structure(eager)) == calls(fx_view) and len(fx_view) == 12
    assert [n.name for n in eager if is_add(n)] == ["0.add", "0.add_1", "1.add", "1.add_1"]  # named by module
    assert sum(is_add(n) for n in gm.graph.nodes) == 4
    first = next(n for n in eager if n.name == "0.a")
    assert [u.name for u in first.args[0].users] == ["0.a", "0.b", "0.bn"]  # every reader of the input


def test_the_record_marks_a_forward_that_reads_a_shape_but_not_the_hooks_own_reading():
    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            assert x.shape[1] == 4
            return self.block(x)

    record = record_calls(Checked().eval(), torch.randn(1, 4, 5, 5))
    assert [c.name for c in record.containers] == ["", "block"]
    assert record.queried == {0}  # the model's forward read x.shape; the block's did not
