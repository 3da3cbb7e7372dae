"""What feeds what, from one eager run: the rewrites' view of a model torch.fx cannot trace.

``record_calls`` runs the model once (``capture.watch``) and keeps
``Calls``: each leaf module's call (a module without children), each torch function that a container's own
``forward`` runs on tensors (shape queries aside), and each container's call. ``nodes`` shows that record
as a list of values with the fields of ``torch.fx.Node`` the rewrites read (``op``, ``target``, ``args``,
``users``, ``meta["tensor_meta"].shape``), so one piece of planning code reads either. The record sees the
path the example takes through the model, and only that path.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import NamedTuple

import torch
from torch import nn

from .capture import Listener, watch
from .tensors import evaluating, outputs, tensor_args

_METADATA = {"dim", "size", "__get__", "stride", "is_contiguous", "numel", "data_ptr", "__len__", "is_floating_point",
             "element_size", "ndimension", "nelement", "__format__", "__repr__", "__bool__"}


_VALUE_READS = {"__bool__", "item", "tolist", "__float__", "__int__", "__index__", "__complex__"}  # a tensor's values
# read by Python, which may branch on them
_SHAPE_OF_SECOND = {"reshape_as", "view_as", "expand_as"}
_LAYOUT_QUERIES = {"stride", "is_contiguous", "data_ptr"}  # shape queries that read how a tensor lies in memory
_VIEW_PROPERTIES = {"T", "mT", "H", "mH", "data", "real", "imag"}  # properties giving a view the record does not
# follow


def _property(func) -> str:
    """The name of the property whose getter ``func`` is (``x.T``: "T"), else ""."""
    return getattr(getattr(func, "__self__", None), "__name__", "")


class Ref(NamedTuple):
    """A tensor argument of a recorded call: its value's key (see ``Calls``) and shape."""

    key: tuple
    shape: tuple


@dataclass(eq=False)
class Call:
    name: str  # the module's qualified name
    module: nn.Module
    input: tuple | None  # the key of its first input tensor (see ``Calls``)
    output: tuple | None  # the key of its output tensor
    input_shape: tuple | None = None
    output_shape: tuple | None = None
    inputs: tuple = ()  # a Ref for every tensor it was given
    seq: int = 0  # its place in the run
    scope: tuple = ()  # the containers' calls open around it (indices into ``Calls.containers``)


@dataclass(eq=False)
class Op:
    """A torch function run in a container's own ``forward`` that returned a tensor."""

    func: object
    args: tuple  # tensors as ``Ref``, one level into lists and tuples; the rest as given
    kwargs: dict
    output: tuple | None = None
    output_shape: tuple | None = None
    seq: int = 0
    scope: tuple = ()


@dataclass
class Calls:
    """One eager run, module by module: every call of a leaf module with its inputs and its output; which
    call produced each value; who used each value (leaf calls, or by name the torch functions run in a
    container's own ``forward``, shape queries aside); those functions themselves (``ops``); every
    container's call, and those whose own ``forward`` read a shape or a tensor's truth (``queried``: Python
    may have branched on it), or a tensor's values (``valued``); and how many places call each module (calls,
    and names it is registered under).

    A value is keyed by its tensor's identity and a generation, which a call that returns its own input
    (in place, or Identity) starts anew: the uses after it are uses of that call's output."""

    calls: list = field(default_factory=list)
    producer: dict = field(default_factory=dict)  # value key -> the leaf Call that made it
    uses: dict = field(default_factory=lambda: defaultdict(list))  # value key -> [Call or function name]
    counts: dict = field(default_factory=dict)  # id(module) -> places
    ops: list = field(default_factory=list)  # Op, in the order they ran
    containers: list = field(default_factory=list)  # Call of each module with children, in the order called
    generation: dict = field(default_factory=dict)  # id(tensor) -> its current generation
    keep: list = field(default_factory=list)  # the tensors, alive until the record is dropped (ids stay unique)
    open: list = field(default_factory=list)  # the containers' calls under way (indices into ``containers``)
    queried: set = field(default_factory=set)  # containers' calls whose own forward read a shape or a bool
    valued: set = field(default_factory=set)  # ... that read a tensor's values (a bool, an item, a list)
    inputs: set = field(default_factory=set)  # the keys of the model's input tensors
    pieces: dict = field(default_factory=dict)  # value key -> the function or leaf whose tuple holds it (``split``)
    reads: dict | None = None  # value key -> [(function, scope)] of the ops reading it (``params_read``'s index)
    read_by: dict = field(default_factory=lambda: defaultdict(list))  # value key -> [(function, scope)]: each
    # function run on it in a container's forward, and each read of its strides or view by a property (``.T``)

    def key(self, t: torch.Tensor) -> tuple:
        self.keep.append(t)
        return id(t), self.generation.get(id(t), 0)

    def params_read(self, m: nn.Module) -> str:
        """The torch function that a forward other than ``m``'s own ran on one of ``m``'s own parameters, not
        through ``m``'s call (timm's EVA attention: ``F.linear(x, self.qkv.weight, bias)``), with that forward,
        as "`linear` in `blocks.0.attn`'s forward"; "" where none did. Reading only a parameter's dtype, device
        or shape (``x.to(w)``, ``w.new_zeros(...)``, ``zeros_like(w)``) does not count."""
        if self.reads is None:  # indexed once: value key -> the first op reading it, and where
            self.reads = {}
            for op in self.ops:
                name = getattr(op.func, "__name__", str(op.func))
                for pos, a in enumerate(_refs(op)):
                    if not ((name in _META_FIRST and pos == 0) or (name in _META_OTHERS and pos > 0)):
                        self.reads.setdefault(a.key, []).append((name, op.scope))
        for p in m.parameters(recurse=False):
            for name, scope in self.reads.get((id(p), self.generation.get(id(p), 0)), ()):
                if any(self.containers[i].module is m for i in scope):  # m's own forward (m has children)
                    continue
                where = self.containers[scope[-1]].name or "the model" if scope else "the model"
                return f"`{name}` in `{where}`'s forward"
        return ""

    def name_pieces(self, out, by: str) -> None:
        """Each tensor of a tuple or list output, as made by ``by`` (a function's or a leaf's name)."""
        for t in out if isinstance(out, (tuple, list)) else ():
            if isinstance(t, torch.Tensor):
                self.pieces[self.key(t)] = by

    def seq(self) -> int:
        """The place of the next call or op in the run."""
        return len(self.calls) + len(self.ops) + len(self.containers)

    def ref(self, v):
        if isinstance(v, torch.Tensor):
            return Ref(self.key(v), tuple(v.shape))
        return type(v)(self.ref(a) for a in v) if isinstance(v, (list, tuple)) else v

    def produced(self, out, inputs, by=None) -> tuple | None:
        """Key ``out`` (a new generation when it is one of ``inputs``: in place, or handed through), made by
        the leaf call ``by`` (None: a torch function)."""
        if not isinstance(out, torch.Tensor):
            return None
        if any(out is t for t in inputs):
            self.generation[id(out)] = self.generation.get(id(out), 0) + 1
        k = self.key(out)
        if by is not None:
            self.producer.setdefault(k, by)
        return k


_META_FIRST = {"new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like",
               "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}  # read their first's dtype
_META_OTHERS = {"to", "type_as"}  # x.to(w), x.type_as(w): w's dtype and device alone


def _refs(op) -> list:
    """The ``Ref`` arguments of a recorded op, in order, one level into lists and tuples."""
    return [a for v in (*op.args, *op.kwargs.values())
            for a in (v if isinstance(v, (tuple, list)) and not isinstance(v, Ref) else (v,)) if isinstance(a, Ref)]


class _Recorder(Listener):
    """Fills ``Calls`` from one ``capture.watch``: each leaf call and container call (its hooks), and each
    torch function a container's own ``forward`` runs (shape queries aside)."""

    def __init__(self, model: nn.Module, record: Calls):
        self.r, self.depth, self.open_calls, self.pending = record, 0, [], None
        self.names = {id(m): n for n, m in reversed(list(model.named_modules()))}
        self.leaves = {id(m) for m in model.modules() if not list(m.children())}

    def pre(self, m, args, kwargs):
        r, tensors = self.r, tensor_args(args, kwargs)
        first = tensors[0] if tensors else None
        c = Call(self.names.get(id(m), ""), m, r.key(first) if first is not None else None, None,
                 tuple(first.shape) if first is not None else None, inputs=tuple(r.ref(t) for t in tensors),
                 seq=r.seq(), scope=tuple(r.open))
        self.open_calls.append((c, tensors))
        if id(m) in self.leaves:
            self.depth += 1
            r.calls.append(c)
            for t in tensors:
                r.uses[r.key(t)].append(c)
        else:
            r.open.append(len(r.containers))
            r.containers.append(c)

    def post(self, m, args, kwargs, out):
        r = self.r
        c, tensors = self.open_calls.pop()
        if id(m) in self.leaves:
            self.depth -= 1
            c.output = r.produced(out, tensors, c)
            r.name_pieces(out, c.name)  # an LSTM's (output, (h, c))
        else:
            r.open.pop()
            c.output = r.key(out) if isinstance(out, torch.Tensor) else None
        c.output_shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None

    def before(self, func, args, kwargs):
        r, name, self.pending = self.r, getattr(func, "__name__", str(func)), None
        if not self.depth and r.open and name in _METADATA:  # a container's forward reads a shape or a bool
            r.queried.add(r.open[-1])
        if not self.depth and r.open and name in _VALUE_READS:  # ... or a tensor's values
            r.valued.add(r.open[-1])
        if not self.depth and (name in _LAYOUT_QUERIES or name == "__get__" and _property(func) in _VIEW_PROPERTIES):
            for t in tensor_args(args, kwargs):  # how it lies in memory read, or a view taken the record loses
                r.read_by[r.key(t)].append((f"{name} {_property(func)}".strip(), tuple(r.open)))
        if self.depth or name in _METADATA:  # inside a leaf module, or a shape query
            return
        tensors = tensor_args(args, kwargs)
        for t in tensors[:1] if name in _SHAPE_OF_SECOND else tensors:  # x.reshape_as(y) reads y's shape alone
            k = r.key(t)  # (once: each key() keeps the tensor alive in the record)
            r.uses[k].append(name)
            r.read_by[k].append((name, tuple(r.open)))
        self.pending = (Op(func, r.ref(tuple(args)), {k: r.ref(v) for k, v in kwargs.items()}, seq=r.seq(),
                           scope=tuple(r.open)), tensors)

    def after(self, func, args, kwargs, out):
        if self.pending is None:
            return
        (op, tensors), self.pending = self.pending, None
        op.output = self.r.produced(out, tensors)
        self.r.name_pieces(out, getattr(func, "__name__", str(func)))  # q, k, v = torch.split(...)
        if op.output is not None:
            op.output_shape = tuple(out.shape)
            self.r.ops.append(op)


def branching(calls: Calls, first: Call, second: Call) -> str:
    """The name of a container whose own forward read a tensor's values (``valued``: Python may have branched
    on them, and another input of the same shape may take another path) on the way from the leaf call
    ``first`` to ``second``: the innermost container holding both, or one holding either below it; "" where
    there is none. (Shapes read, as most forwards read them to reshape, do not count.)"""
    k = 0
    while k < min(len(first.scope), len(second.scope)) and first.scope[k] == second.scope[k]:
        k += 1
    for i in first.scope[max(k - 1, 0):] + second.scope[k:]:
        if i in calls.valued:
            return calls.containers[i].name or "(the model)"
    return ""


MODEL_OUTPUT = "the model's output"  # the use of each tensor the model returns


def record_calls(model: nn.Module, example) -> Calls:
    """Run ``model`` once on ``example`` (a tensor, a tuple or a dict of them) and record ``Calls``, in eval
    mode (a training model's norm statistics stay as they were; each module's mode is given back)."""
    record = Calls()
    record.inputs = {record.key(t) for t in outputs(example, strict=False)}
    with evaluating(model):
        out = watch(model, example, _Recorder(model, record))
    for t in outputs(out, strict=False):  # what the model returns is read too (by its caller)
        record.uses[record.key(t)].append(MODEL_OUTPUT)
    per_module = defaultdict(int)
    for c in record.calls + record.containers:
        per_module[id(c.module)] += 1
    registered = defaultdict(int)
    for _, m in model.named_modules(remove_duplicate=False):
        registered[id(m)] += 1
    record.counts = {k: max(per_module.get(k, 0), registered.get(k, 0)) for k in set(per_module) | set(registered)}
    return record


_SAME_LAYOUT = {"transpose", "permute", "movedim", "swapaxes", "relu", "relu_", "add", "__add__", "__radd__",
                "__iadd__", "mul", "__mul__", "__rmul__", "__imul__"}  # outputs lie in memory as their input
_NEW_LAYOUT = {"bmm", "matmul", "__matmul__", "mm", "conv1d", "conv2d", "conv3d", "contiguous"}  # any strides in,
# their own out


def strided_reader(calls: Calls, key: tuple, new_layout: tuple, same_layout: tuple) -> str:
    """Who may depend on how the value ``key`` lies in memory: "" where every reader takes it with any strides,
    else the first that may not (a name, ``MODEL_OUTPUT``: its caller may ``view`` it, or "no reader seen").
    Modules of the classes ``new_layout`` (leaves or not: what runs inside them is theirs) and functions in
    ``_NEW_LAYOUT`` read any strides and lay out their own output; leaves of ``same_layout`` and functions in
    ``_SAME_LAYOUT`` (elementwise, transposes) give outputs laid out as their input, whose readers are asked
    in turn; anything else may depend on them: ``view``, pieces (``chunk``, ``split``), a leaf of another
    class, a forward reading the strides or taking ``.T``. Only what the record saw is asked (a C++ extension
    called without torch's dispatch is not seen)."""
    todo, seen = [key], set()
    while todo:
        k = todo.pop()
        if k in seen:
            continue
        seen.add(k)
        if MODEL_OUTPUT in calls.uses.get(k, ()):
            return MODEL_OUTPUT
        theirs = {i for i, c in enumerate(calls.containers)
                  if isinstance(c.module, new_layout) and any(a.key == k for a in c.inputs)}
        leaves = [c for c in calls.calls if not theirs.intersection(c.scope) and any(a.key == k for a in c.inputs)]
        functions = [name for name, scope in calls.read_by.get(k, ()) if not theirs.intersection(scope)]
        if not (theirs or leaves or functions):
            return "no reader seen"
        for c in leaves:
            if isinstance(c.module, same_layout) and c.output is not None:
                todo.append(c.output)
            elif not isinstance(c.module, new_layout):
                return f"`{c.name}` ({type(c.module).__name__})"
        for name in functions:
            if name not in _SAME_LAYOUT | _NEW_LAYOUT:
                return f"`{name}`"
        todo += [op.output for op in calls.ops if getattr(op.func, "__name__", "") in _SAME_LAYOUT
                 and not theirs.intersection(op.scope) and any(a.key == k for a in _refs(op))]
    return ""


# --- the record as fx-like nodes --------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """A value of the run, with the fields of ``torch.fx.Node`` that the rewrites read; ``source`` is the
    ``Call`` or ``Op`` that produced it (None for a value that came from outside the record: an input)."""

    name: str
    op: str  # "placeholder", "call_module", "call_function" or "call_method", as in fx
    target: object  # the module's name, the function, or the method's name
    args: tuple
    kwargs: dict
    meta: dict
    users: dict = field(default_factory=dict)  # node -> None, as in fx
    source: object = None
    key: tuple | None = None

    def __repr__(self):
        return self.name


def _kind(func) -> tuple:
    """fx's (op, target) for a function the mode saw: a Tensor method by name, anything else itself."""
    if getattr(func, "__qualname__", "").startswith(("TensorBase.", "Tensor.")):
        return "call_method", func.__name__
    return "call_function", func


def nodes(record: Calls) -> list:
    """The record's leaf calls and ops as ``Node``s in the order they ran, each input a ``Node`` too (a
    placeholder for a value the record did not produce)."""
    out, by_key, names = [], {}, defaultdict(int)

    def value(v):
        if isinstance(v, Ref):
            if v.key not in by_key:
                by_key[v.key] = Node(f"input_{len(by_key)}", "placeholder", None, (), {},
                                     {"tensor_meta": SimpleNamespace(shape=v.shape)}, key=v.key)
                out.append(by_key[v.key])
            return by_key[v.key]
        if isinstance(v, dict):
            return {k: value(a) for k, a in v.items()}
        return type(v)(value(a) for a in v) if isinstance(v, (list, tuple)) else v

    for e in sorted(record.calls + record.ops, key=lambda e: e.seq):
        if isinstance(e, Call):
            op, target, args, kwargs = "call_module", e.name, value(e.inputs), {}
            base = e.name
        else:
            (op, target), args, kwargs = _kind(e.func), value(e.args), value(e.kwargs)
            scope = record.containers[e.scope[-1]].name if e.scope else ""
            base = f"{scope}.{getattr(e.func, '__name__', 'op')}".lstrip(".")
        names[base] += 1
        node = Node(base if names[base] == 1 else f"{base}_{names[base] - 1}", op, target, args, kwargs,
                    {"tensor_meta": SimpleNamespace(shape=e.output_shape)}, source=e, key=e.output)
        for a in tensor_nodes(args, kwargs):
            a.users[node] = None
        out.append(node)
        if e.output is not None:
            by_key[e.output] = node
    return out


def tensor_nodes(args, kwargs) -> list:
    """The ``Node``s among a node's arguments, one level into lists and tuples."""
    found = []
    for a in list(args) + list(kwargs.values()):
        found += [a] if isinstance(a, Node) else [t for t in a if isinstance(t, Node)] if isinstance(a, (list, tuple)) \
            else []
    return found
