"""The fast path keeps no hidden state: no cache keyed by memory addresses, no kernel timed inside a forward
pass, no process-wide tables; what optimize() chose travels with the model; private torch APIs in one file."""
import ast
import gc
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebyone.torch import ConvAct, FusedPointwiseChain, Pointwise
from onebyone.torch.fast import MaxPool, optimize, private, timing
from onebyone.torch.fast.chain import pointwise_chain

from .cpus import REWRITES, reads_the_hardware, simulate

FAST = pathlib.Path(private.__file__).parent


def reference_chain(x, ws, bs):
    for w, b in zip(ws, bs):
        x = torch.relu(F.conv1d(x, w[..., 0], b))  # (B, C, L) -> (B, O, L)
    return x


def test_the_chain_operator_never_runs_weights_it_was_given_before():
    """The op kept packed weights keyed by (tile, data_ptr, version): new weights written at the address of
    freed ones, with version 0, ran the old ones. Here the reuse is made to happen: each set of weights is a
    new tensor over the same memory (NumPy views), version 0, with new values."""
    x = torch.randn(4, 64, 1024)
    memory = [np.empty((128, 64, 1, 1), np.float32), np.empty((256, 128, 1, 1), np.float32)]
    rng = np.random.default_rng(0)
    for _ in range(6):
        for m in memory:
            m[:] = rng.standard_normal(m.shape, dtype=np.float32) / 8
        ws = [torch.from_numpy(m) for m in memory]  # new tensors, same addresses, version 0
        bs = [torch.zeros(w.shape[0]) for w in ws]
        assert [w._version for w in ws] == [0, 0]
        with torch.no_grad():
            got = pointwise_chain(x, ws, bs, "relu,relu", "", 1, 2048, "packed,packed")
        torch.testing.assert_close(got, reference_chain(x, ws, bs), rtol=1e-4, atol=1e-4)


def test_the_chain_operator_with_weights_freed_and_allocated_again():
    x = torch.randn(4, 64, 1024)
    for seed in range(10):
        torch.manual_seed(seed)
        ws = [torch.randn(128, 64, 1, 1) / 8, torch.randn(256, 128, 1, 1) / 8]
        bs = [torch.randn(128), torch.randn(256)]
        with torch.no_grad():
            got = pointwise_chain(x, ws, bs, "relu,relu", "", 1, 2048, "")
        torch.testing.assert_close(got, reference_chain(x, ws, bs), rtol=1e-4, atol=1e-4)
        del ws, bs
        gc.collect()


def test_a_fused_chain_never_runs_weights_that_were_replaced():
    torch.manual_seed(0)
    chain = FusedPointwiseChain.from_layers([nn.Conv1d(64, 128, 1), nn.ReLU(), nn.Conv1d(128, 256, 1), nn.ReLU()])
    x = torch.randn(4, 64, 1024)
    shared = np.empty((128, 64, 1, 1), np.float32)  # each new Parameter over the same memory, version 0
    for seed in range(6):
        with torch.no_grad():
            chain(x)  # packs the current weights
        shared[:] = np.random.default_rng(seed).standard_normal(shared.shape, dtype=np.float32) / 8
        chain.weights[0] = nn.Parameter(torch.from_numpy(shared))
        chain.weights[1] = nn.Parameter(torch.randn(256, 128, 1, 1) / 8)  # old one freed, new one allocated
        gc.collect()
        with torch.no_grad():
            got = chain(x)
        want = reference_chain(x, list(chain.weights), list(chain.biases))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", ["conv", "matmul over rows"])
def test_a_convact_never_runs_weights_that_were_replaced(kernel):
    torch.manual_seed(0)
    layer = ConvAct(Pointwise(32, 48), "relu")
    x = torch.randn(2, 32, 14, 14).contiguous(memory_format=torch.channels_last)
    layer.kernels[(tuple(x.shape), "float32")] = kernel
    shared = np.empty((48, 32, 1, 1), np.float32)
    for seed in range(6):
        with torch.no_grad():
            layer(x)
        shared[:] = np.random.default_rng(seed).standard_normal(shared.shape, dtype=np.float32)
        layer.weight = nn.Parameter(torch.from_numpy(shared))  # same memory as the last one, version 0
        with torch.no_grad():
            torch.testing.assert_close(layer(x), torch.relu(F.conv2d(x, layer.weight, layer.bias)),
                                       rtol=1e-4, atol=1e-4)
        layer.weight = nn.Parameter(torch.randn(48, 32, 1, 1))  # a fresh allocation, the old one freed
        gc.collect()
        with torch.no_grad():
            torch.testing.assert_close(layer(x), torch.relu(F.conv2d(x, layer.weight, layer.bias)),
                                       rtol=1e-4, atol=1e-4)


def test_an_optimized_model_made_and_run_under_inference_mode():
    """Tensors made under ``torch.inference_mode`` have no version counter (reading it raises): optimizing,
    copying and running there works, and gives the model's outputs."""
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 1),
                          nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        opt, report = optimize(model, x, passes=["fold", "chains", "conv_acts", "check"])
        assert any(isinstance(m, ConvAct) for m in opt.modules()) and any(
            isinstance(m, FusedPointwiseChain) for m in opt.modules())
        for form in (opt, copy.deepcopy(opt)):
            torch.testing.assert_close(form(x), model(x), rtol=1e-4, atol=1e-5)


def module_level_state(path: pathlib.Path) -> list:
    """Names bound at module level to a mutable container (a dict, list or set display or call), or to
    an object of a class defined in the module: where process-wide caches live."""
    tree = ast.parse(path.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    found = []
    for node in tree.body:
        targets = {ast.Assign: lambda: node.targets, ast.AnnAssign: lambda: [node.target]}.get(type(node), list)()
        value = getattr(node, "value", None)
        mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)) or (
            isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in {"dict", "list", "set", "defaultdict", "OrderedDict", *classes})
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"]
        table = isinstance(value, ast.Dict) and value.keys and all(n.isupper() for n in names)  # a constant table
        if mutable and names and not table:
            found += names
    return found


@pytest.mark.parametrize("path", sorted(FAST.glob("*.py")), ids=lambda p: p.name)
def test_no_module_level_mutable_state_in_the_fast_path(path):
    found = module_level_state(path)
    # upper-case dict displays with entries are constant tables (name -> kernel function), never written to
    assert found == [], f"{path.name} keeps module-level state: {found}"
    if path.name != "private.py":
        assert "lru_cache" not in path.read_text() and "functools.cache" not in path.read_text()


def test_the_state_check_finds_a_cache(tmp_path):
    src = "_CACHE = {}\n_ENGINE: dict = dict()\nclass P(dict): pass\n_PACKS = P()\nKERNELS = {'a': 1}\n"
    (tmp_path / "probe.py").write_text(src)
    assert module_level_state(tmp_path / "probe.py") == ["_CACHE", "_ENGINE", "_PACKS"]


def test_private_torch_apis_live_in_one_module():
    """A torch upgrade that moves a private API breaks private.py alone."""
    for path in FAST.glob("*.py"):
        if path.name == "private.py":
            continue
        text = path.read_text()
        code = "\n".join(line.split("#")[0] for line in text.splitlines())  # comments may name them
        for private_name in ("torch._C", "torch.ops.mkldnn", "torch._inductor", "torch.onnx._internal",
                             "torch._dynamo.config.patch"):
            assert private_name not in code.replace('"', " ").replace("`", " ") or private_name in _docstrings(text), (
                f"{path.name} calls {private_name}: move it to private.py")


def _docstrings(text: str) -> str:
    tree = ast.parse(text)
    return "\n".join(ast.get_docstring(n) or "" for n in ast.walk(tree)
                     if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)))


def test_without_onednn_the_wrappers_compute_the_same_numbers(monkeypatch):
    torch.manual_seed(0)
    rows, w, b = torch.randn(50, 16), torch.randn(24, 16), torch.randn(24)
    x, wc = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last), torch.randn(24, 16, 3, 3)
    geom = ([1, 1], [2, 2], [1, 1], 1)
    with torch.no_grad():
        fast = [private.linear_pointwise(rows, w, b, "relu"), private.convolution_pointwise(x, wc, b, geom, "gelu")]
        simulate(monkeypatch, "no oneDNN")
        assert private.reorder_linear_weight(w, 50) is w and private.reorder_convolution_weight(wc, geom, x.shape) is wc
        plain = [private.linear_pointwise(rows, w, b, "relu"), private.convolution_pointwise(x, wc, b, geom, "gelu")]
    want = [torch.relu(rows @ w.t() + b), F.gelu(F.conv2d(x, wc, b, 2, 1))]
    for f, p, ref in zip(fast, plain, want):
        torch.testing.assert_close(f, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(p, ref, rtol=1e-4, atol=1e-4)


@reads_the_hardware
def test_capabilities_describe_this_machine():
    caps = private.capabilities()
    assert caps.isa == torch.backends.cpu.get_cpu_capability()
    assert caps.bf16 == (caps.onednn and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = open("/proc/cpuinfo").read() if pathlib.Path("/proc/cpuinfo").exists() else ""
    assert caps.amx == ("amx_bf16" in flags and "amx_tile" in flags)
    assert caps.describe().startswith(caps.isa + ", ")


@reads_the_hardware  # the probe itself (replaced where the whole run simulates a CPU)
@pytest.mark.parametrize("env,vnni,avx512_vnni", [({}, True, True), ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False, True),
                                                   ({"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, True, False)])
def test_an_isa_held_below_vnni_by_either_library_turns_8_bit_inputs_off(monkeypatch, env, vnni, avx512_vnni):
    """oneDNN's ``ONEDNN_MAX_CPU_ISA`` and fbgemm's ``FBGEMM_ENABLE_INSTRUCTIONS`` each hold one library below
    VNNI (the CPU's flags read here as a Zen 4's): either turns off the 8-bit inputs of torch's int8 kernels."""
    monkeypatch.setattr(private, "cpu_fields", lambda: {"flags": "avx2 avx512f avx512bw avx512vl avx512dq avx512_vnni"})
    for k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    private._probe.cache_clear()
    try:
        caps = private._probe()
    finally:
        private._probe.cache_clear()
    assert (caps.vnni, caps.avx512_vnni, caps.eight_bit_inputs) == (vnni, avx512_vnni, vnni and avx512_vnni)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), Pointwise(16, 32), nn.ReLU(),
                         nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 8, 1)).eval()


def test_fast_layers_built_and_called_directly_never_time_anything(monkeypatch):
    calls = []
    for name in ("once", "fastest", "medians", "timings"):
        real = getattr(timing, name)
        monkeypatch.setattr(timing, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    clock = []
    real_clock = timing.time.perf_counter
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock.append(1) or real_clock())
    x = torch.randn(2, 16, 10, 10).contiguous(memory_format=torch.channels_last)
    layers = [ConvAct(Pointwise(16, 32), "relu"), MaxPool(nn.MaxPool2d(2)),
              FusedPointwiseChain.from_layers([Pointwise(16, 32), nn.ReLU(), Pointwise(32, 8)])]
    with torch.no_grad():
        for layer in layers:
            for inp in (x, x.contiguous(), x.to(torch.bfloat16)):
                layer.to(inp.dtype)(inp)
                layer.to(torch.float32)
    assert calls == [] and clock == []
    assert all(layer.kernels == {} for layer in layers)  # and chose nothing
    opt, report = optimize(small_net(), torch.randn(2, 3, 12, 12), channels_last=True, passes=REWRITES)
    assert "once" in calls and clock  # optimize is what times


SAVE_AND_RELOAD = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from onebyone.torch.fast import ConvAct, FusedPointwiseChain, MaxPool, chain, convact, pool
    ran = []
    def count(table, kind):
        for name, fn in list(table.items()):
            table[name] = lambda *a, name=name, fn=fn: ran.append([kind, name]) or fn(*a)
    count(convact.KERNELS, "ConvAct"); count(pool.KERNELS, "MaxPool"); count(chain.KERNELS, "chain")
    model = torch.load(sys.argv[1], weights_only=False)  # our own file, written by the test a moment ago
    x = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        y = model(x)
    print(json.dumps({"ran": ran, "y": y.flatten().tolist()}))
""")


def test_an_optimized_model_saved_and_loaded_in_another_process_runs_the_kernels_its_report_lists(tmp_path):
    model, x = small_net(), torch.randn(2, 3, 12, 12)
    opt, report = optimize(model, x, channels_last=True, passes=REWRITES)
    chosen = {(r["name"].removeprefix("model."), r["layer"]): r["kernel"] for r in report.layers}
    assert {layer for _, layer in chosen} >= {"ConvAct", "MaxPool"}
    torch.save(opt, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run.py"
    script.write_text(SAVE_AND_RELOAD)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "model.pt"), str(tmp_path / "x.pt")],
                         capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ran = [tuple(r) for r in result["ran"]]
    listed = [(layer, kernel) for (_, layer), kernel in chosen.items()
              if layer != "FusedPointwiseChain" and kernel]  # one kernel a call for convs and pools
    assert sorted(r for r in ran if r[0] != "chain") == sorted(listed)
    engines = [k.split(", ") for (_, layer), k in chosen.items() if layer == "FusedPointwiseChain"]
    assert [name for kind, name in ran if kind == "chain"] == [e for es in engines for e in es]
    with torch.no_grad():
        np.testing.assert_allclose(result["y"], opt(x).flatten().tolist(), rtol=1e-5, atol=1e-5)
