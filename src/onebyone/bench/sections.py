"""The sections of ``onebyone bench``, each a function returning plain dicts of measurements:

  a  the pointwise op over widths: Pointwise vs F.conv2d (NCHW, channels_last) vs torch.matmul
  b  PointNet's shared MLP 3-64-64-64-128-1024 + max pool: fused (float32, bfloat16) vs eager Conv1d vs
     torch.compile, onnxruntime and OpenVINO
  c  dense prediction: a convolutionalized classifier vs the classifier on every crop
  d  the 5x5 bottleneck: measured speedup vs the MAC ratio
  e  optimize() (float32, bfloat16, compile=True) on zoo models: vs eager, torch.compile (with and
     without freezing), onnxruntime and OpenVINO; optimize()'s own seconds
  f  (in ``bench.branches``) a RepVGG-A0-sized network: merge_branches vs its training form
  g  (in ``bench.int8``) optimize(dtype=torch.int8) vs optimize() in float32 and bfloat16 and each engine
     in all three
and ``peak`` (GFLOP/s of a large channels_last 1x1 conv, GB/s of a large copy). Times are the best of
interleaved repeats after a warm-up (``timeit``).
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..torch import Pointwise, convolutionalize
from ..torch.fast import (
    CastIO,
    Compiled,
    FusedPointwiseChain,
    OnnxRuntime,
    OpenVino,
    capabilities,
    optimize,
    own_compile,
)
from ..torch.fast.passes import choose_kernels
from ..torch.fast.private import inductor_config, quantized_tensors
from ..torch.fast.timing import per_block, timings
from ..torch.tensors import call
from ..zoo import create_model, list_models, model_info
from .memory import peak_memory

POINTNET = (3, 64, 64, 64, 128, 1024)


def timeit(fns: dict, repeat: int = 5, block: float = 0.005, budget: float = 0.1, spread: dict | None = None) -> dict:
    """Best seconds per call of each callable under no_grad, over interleaved rounds after a warm-up
    call (``torch.fast.timing.timings``), each timed block right after an untimed one of the same callable
    (what a loop over one model sees: another engine's threads, still spinning from its turn, would slow
    the first calls). A callable faster than ``block`` seconds is timed over as many
    calls in a row as fill it. Rounds: ``repeat``, or more (up to 25) while each callable's rounds fit
    in ``budget`` seconds. Why the best and not the median, and why blocks: ``benchmarks/README.md``.
    ``spread``, if given, receives each callable's median round over its best (1.0: every round alike)."""
    with torch.no_grad():
        for f in fns.values():
            f()  # the warm-up (a first call may pick kernels, pack weights, compile)
        once = {k: t for k, (t,) in timings(fns, 1).items()}
        calls = per_block(once, block)
        rounds = max(repeat, min(25, int(budget / max(calls[k] * t for k, t in once.items()))))
        every = timings(fns, rounds, calls, settle=True)
    if spread is not None:
        spread |= {k: statistics.median(v) / min(v) for k, v in every.items()}
    return {k: min(v) for k, v in every.items()}


PEAK_SHAPES = ((4, 1024, 1024, 28), (1, 512, 2048, 32), (4, 256, 1024, 56))  # (batch, C, O, size) of the peak's convs


def peak(repeat: int = 5, quick: bool = False) -> dict:
    """GFLOP/s of large channels_last 1x1 convs (best shape; ``quick``: the first shape alone), in float32 and,
    where the processor has bfloat16 products, in bfloat16 (GOP/s in int8); GB/s of a 256 MB copy."""
    shapes = PEAK_SHAPES[:1] if quick else PEAK_SHAPES
    out = {"peak_gflops": _conv_peak(torch.float32, repeat, shapes)}
    if capabilities().bf16:
        out["peak_gflops_bf16"] = _conv_peak(torch.bfloat16, repeat, shapes)
    if "x86" in torch.backends.quantized.supported_engines:
        out["peak_gops_int8"] = _int8_peak(repeat, shapes)
    src, dst = torch.randn(32 << 20), torch.empty(32 << 20)
    t = timeit({"copy": lambda: dst.copy_(src)}, repeat)["copy"]
    return out | {"bandwidth_gbs": 2 * src.numel() * 4 / t / 1e9}


def _conv_peak(dtype, repeat: int, shapes) -> float:
    best = 0.0
    for b, c, o, s in shapes:
        x = torch.randn(b, c, s, s, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(o, c, 1, 1, dtype=dtype)
        t = timeit({"conv": lambda: F.conv2d(x, w)}, repeat)["conv"]
        best = max(best, 2 * b * s * s * c * o / t / 1e9)
    return best


def _int8_peak(repeat: int, shapes) -> float:
    """GOP/s (two per multiply-accumulate) of the same large 1x1 convs in torch's x86 int8 kernels (what
    ``optimize(dtype=torch.int8)``'s torch form runs) and as oneDNN's int8 matmul over their rows (what its
    fused chains run), the faster: uint8 inputs (7 bits without VNNI), int8 weights."""
    import torch.ao.nn.quantized as nnq

    from ..torch.fast import private

    best, levels = 0.0, 255 if capabilities().vnni else 127
    for b, c, o, s in shapes:
        with quantized_tensors():
            x = torch.quantize_per_tensor(torch.rand(b, c, s, s) * levels, 1.0, 0, torch.quint8).contiguous(
                memory_format=torch.channels_last)
            w = torch.quantize_per_channel(torch.randn(o, c, 1, 1), torch.full((o,), 0.02, dtype=torch.double),
                                           torch.zeros(o, dtype=torch.long), 0, torch.qint8)
        conv = nnq.Conv2d(c, o, 1)
        conv.set_weight_bias(w, None)
        fns = {"conv": lambda: conv(x)}
        if private.onednn_int8():
            rows, q = x.int_repr().permute(0, 2, 3, 1).reshape(-1, c), w.int_repr().flatten(1)  # (T, C), (O, C)
            packed, scales = private.qlinear_prepack(q, rows.shape[0]), torch.full((o,), 0.02)
            fns["matmul"] = lambda: private.qlinear_pointwise(rows, 1.0, 0, packed, q, scales, None, (1.0, 0))
        t = min(timeit(fns, repeat).values())
        best = max(best, 2 * b * s * s * c * o / t / 1e9)
    return best


def _roof(name, flops, bytes_, seconds, section) -> dict:
    return {
        "section": section,
        "name": name,
        "gflops": flops / seconds / 1e9,
        "intensity": flops / bytes_,
        "ms": seconds * 1e3,
    }


def pointwise_op(quick: bool, repeat: int) -> list:
    rows = []
    b, s = (4, 28) if quick else (8, 56)
    for c in ((3, 64, 256, 1024) if quick else (3, 16, 64, 256, 512, 1024)):
        o = 64 if c == 3 else c
        layer = Pointwise(c, o).eval()
        w, bias = layer.weight, layer.bias
        x = torch.randn(b, c, s, s)
        xcl = x.contiguous(memory_format=torch.channels_last)
        # each layout's contenders timed among themselves: the ratio is within a layout, and NCHW's large
        # matmul outputs would otherwise evict and unmap what the channels_last calls use. The control is
        # F.conv2d a second time: its ratio shows how far the timer alone moves a ratio (an A/A test)
        t = timeit({"pointwise_nchw": lambda: layer(x), "conv2d_nchw": lambda: F.conv2d(x, w, bias),
                    "matmul_nchw": lambda: torch.matmul(w.flatten(1), x.flatten(2)) + bias[:, None],
                    "control_nchw": lambda: F.conv2d(x, w, bias)}, repeat)
        t |= timeit({"pointwise_cl": lambda: layer(xcl), "conv2d_cl": lambda: F.conv2d(xcl, w, bias),
                     "matmul_cl": lambda: torch.matmul(xcl.permute(0, 2, 3, 1), w.flatten(1).t()) + bias,
                     "control_cl": lambda: F.conv2d(xcl, w, bias)}, repeat)
        flops = 2 * cost.conv1x1_cost((b, c, s, s), o).macs
        bytes_ = 4 * (b * s * s * (c + o) + c * o)
        row = {"c_in": c, "c_out": o, "batch": b, "size": s, **{k: v * 1e3 for k, v in t.items()}}
        row["pointwise_vs_best_nchw"] = min(t["conv2d_nchw"], t["matmul_nchw"]) / t["pointwise_nchw"]
        row["pointwise_vs_best_cl"] = min(t["conv2d_cl"], t["matmul_cl"]) / t["pointwise_cl"]
        row["control_vs_best"] = {
            k: min(t[f"conv2d_{k}"], t[f"matmul_{k}"]) / t[f"control_{k}"] for k in ("nchw", "cl")
        }
        row["roofline"] = [
            _roof(f"pointwise {c}->{o} {k}", flops, bytes_, t[k], "a") for k in ("pointwise_nchw", "pointwise_cl")
        ]
        rows.append(row)
    return rows


def _pointnet_parts(b: int, n: int):
    torch.manual_seed(0)
    eager = nn.Sequential(*[m for i, o in zip(POINTNET, POINTNET[1:]) for m in (nn.Conv1d(i, o, 1), nn.ReLU())]).eval()
    fused = FusedPointwiseChain.from_layers(list(eager), pool="max")
    x = torch.randn(b, 3, n)
    return eager, fused, x


def shared_mlp(quick: bool, repeat: int, compile_: bool) -> dict:
    b, n = (8, 1024) if quick else (32, 1024)
    eager, fused, x = _pointnet_parts(b, n)
    choose_kernels(fused, x)  # each layer's engine timed on this input, as optimize() does
    fns = {"eager": lambda: eager(x).amax(2), "fused": lambda: fused(x)}
    if capabilities().bf16:
        fused16 = CastIO(copy.deepcopy(fused), torch.bfloat16)  # float32 in and out, products in bfloat16
        choose_kernels(fused16, x)
        fns["fused_bf16"] = lambda: fused16(x)
    if compile_:
        comp = own_compile(eager)  # what torch.compile(eager) is in a process of its own (see _compiled)
        fns["compile"] = lambda: comp(x).amax(2)
    fns |= _engines(_MaxOverPoints(eager).eval(), x)
    with torch.no_grad():
        ref = eager(x).amax(2)
        err = {k: float((_first_tensor(f()).float() - ref).abs().max()) for k, f in fns.items()}
    spread = {}
    t = timeit(fns, repeat, spread=spread)
    flops = 2 * b * n * sum(i * o for i, o in zip(POINTNET, POINTNET[1:]))
    mem = {k: peak_memory(f) for k, f in fns.items()}
    out = {"batch": b, "points": n, "ms": {k: v * 1e3 for k, v in t.items()}, "max_abs_diff": err,
           "gflops": {k: flops / v / 1e9 for k, v in t.items()}, "peak_extra_bytes": mem, "round_spread": spread,
           "fused_vs_eager": t["eager"] / t["fused"],
           "fused_memory_vs_eager": None if mem["eager"] is None else mem["fused"] / max(mem["eager"], 1),
           "roofline": [_roof(f"shared MLP {k}", flops, 4 * b * n * (3 + 1024), v, "b") for k, v in t.items()]}
    if compile_:
        out["fused_vs_compile"] = t["compile"] / t["fused"]
    out |= {f"fused_vs_{k}": t[k] / t["fused"] for k in PEER_ENGINES if k in t}
    if any(k in t for k in PEER_ENGINES):
        out["fused_vs_best_engine"] = min(t[k] for k in PEER_ENGINES if k in t) / t["fused"]
    if "fused_bf16" in t:
        out["bf16_vs_eager"], out["bf16_vs_fused"] = t["eager"] / t["fused_bf16"], t["fused"] / t["fused_bf16"]
    return out


def _first_tensor(out) -> torch.Tensor:
    """A contender's output as a tensor: torch's, onnxruntime's list of arrays, OpenVINO's dict of them."""
    if isinstance(out, torch.Tensor):
        return out
    first = out[0] if isinstance(out, (list, tuple)) else next(iter(out.values()))
    return torch.from_numpy(first)


class _MaxOverPoints(nn.Module):
    """The eager chain and its max over the points, as one module for the engines' exports."""

    def __init__(self, chain: nn.Module):
        super().__init__()
        self.chain = chain

    def forward(self, x):
        return self.chain(x).amax(2)


def _window_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def dense_prediction(quick: bool, repeat: int) -> dict:
    model = _window_classifier()  # 28x28 windows, total stride 4, no padding: each cell equals its crop
    conv, _ = convolutionalize(model, (1, 28, 28))
    image = torch.randn(1, 1, 252, 252)
    crops = image.unfold(2, 28, 4).unfold(3, 28, 4)  # (1, 1, 57, 57, 28, 28)
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 1, 28, 28).contiguous()  # (3249, 1, 28, 28)
    one_by_one = lambda: [model(crops[i:i + 1]) for i in range(len(crops))]  # noqa: E731
    t = timeit({"every_crop_batched": lambda: model(crops), "every_crop_one_by_one": one_by_one,
                "convolutionalized": lambda: conv(image)}, max(1, repeat // 2))
    with torch.no_grad():
        grid = conv(image)[0].permute(1, 2, 0).reshape(-1, 10)  # (10, 57, 57) -> (3249, 10)
        err = float((grid - model(crops)).abs().max())
    return {"windows": crops.shape[0], "ms": {k: v * 1e3 for k, v in t.items()}, "max_abs_diff": err,
            "speedup": t["every_crop_one_by_one"] / t["convolutionalized"],
            "speedup_vs_batched_crops": t["every_crop_batched"] / t["convolutionalized"]}


def bottleneck(quick: bool, repeat: int) -> dict:
    b = 4 if quick else 8
    torch.manual_seed(0)
    x = torch.randn(b, 192, 28, 28).contiguous(memory_format=torch.channels_last)
    direct = nn.Conv2d(192, 32, 5, padding=2).eval().to(memory_format=torch.channels_last)
    reduce = (
        nn.Sequential(nn.Conv2d(192, 16, 1), nn.ReLU(), nn.Conv2d(16, 32, 5, padding=2))
        .eval()
        .to(memory_format=torch.channels_last)
    )
    t = timeit({"direct_5x5": lambda: direct(x), "bottleneck": lambda: reduce(x)}, repeat)
    macs_direct = cost.conv_cost((1, 192, 28, 28), 32, 5, padding="same").macs
    macs_bottle = (
        cost.conv1x1_cost((1, 192, 28, 28), 16).macs + cost.conv_cost((1, 16, 28, 28), 32, 5, padding="same").macs
    )
    ratio = macs_direct / macs_bottle
    speedup = t["direct_5x5"] / t["bottleneck"]
    return {"batch": b, "macs_direct": macs_direct, "macs_bottleneck": macs_bottle, "mac_ratio": ratio,
            "ms": {k: v * 1e3 for k, v in t.items()}, "speedup": speedup, "speedup_vs_mac_ratio": speedup / ratio}


def _real_models(skipped: list) -> dict:
    """name -> (model, example, MACs per sample): four architectures from `transformers`, built from configs
    (random weights, nothing downloaded), at 224 x 224; where transformers is missing or fails to import or
    build them, none, and ``skipped`` says why."""
    try:
        import transformers as T

        T.ResNetForImageClassification, T.MobileNetV2ForImageClassification  # noqa: B018 - its lazy imports run
    except Exception as e:  # noqa: BLE001 - not installed, or an import inside it failed (a mismatched torchvision)
        skipped.append(f"the transformers models: transformers does not import here ({type(e).__name__}: "
                       f"{str(e)[:160]})")
        return {}
    from ..torch.collect import analyze

    out = {}
    for name, cls, config in (
            ("hf_resnet18", T.ResNetForImageClassification,
             T.ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic")),
            ("hf_mobilenet_v2", T.MobileNetV2ForImageClassification, T.MobileNetV2Config()),
            ("hf_convnext_atto", T.ConvNextForImageClassification,
             T.ConvNextConfig(hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2])),
            ("hf_resnet50", T.ResNetForImageClassification, T.ResNetConfig())):
        torch.manual_seed(0)
        model = cls(config).eval()
        x = {"pixel_values": torch.randn(8, 3, 224, 224)}
        out[name] = (model, x, analyze(model, example=x).macs // 8)
    return out


PEER_ENGINES = ("onnxruntime", "openvino")  # the inference engines users deploy, as a user would run them


def _engines(model, x) -> dict:
    """{engine: a callable running ``model`` on ``x``} for each engine that is installed and takes the model."""
    out = {"onnxruntime": _onnxruntime(model, x), "openvino": _openvino(model, x)}
    return {k: f for k, f in out.items() if f is not None}


def _onnxruntime(model, x):
    """A callable running ``model``'s ONNX export in onnxruntime (CPU, all graph optimizations, this process's
    thread count), or None where onnxruntime or the export is unavailable."""
    made = _onnx_session(model, x)
    if made is None:
        return None
    session, feeds = made
    return lambda: session.run(None, feeds)


def _openvino(model, x):
    """A callable running ``model`` converted by OpenVINO (``openvino.convert_model`` on the torch model, as
    its documentation shows) and compiled for the CPU in float32 (its default on CPUs with bfloat16 products
    is bfloat16), the latency hint and this process's thread count; None where OpenVINO or the conversion
    is unavailable."""
    try:
        import openvino as ov
    except ImportError:
        return None
    feeds = list(x.values()) if isinstance(x, dict) else [x]
    try:
        converted = ov.convert_model(model, example_input=x if isinstance(x, dict) else (x,))
    except Exception:  # noqa: BLE001 - a model the converter cannot take: no OpenVINO contender
        return None
    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request, arrays = compiled.create_infer_request(), [v.numpy() for v in feeds]
    return lambda: request.infer(arrays)


def _onnx_session(model, x, profile: bool = False):
    """(onnxruntime session, its feeds) for ``model``'s ONNX export on ``x``, or None (see ``_onnxruntime``).

    This peer is kept apart from ``onebyone.torch.fast.OnnxRuntime`` on purpose: it is the baseline a user
    gets from the common recipe (the TorchScript exporter, a bare session with onnxruntime's default
    spinning threads, pre-made NumPy feeds), the thing ``optimize()`` is measured against; ``OnnxRuntime``
    is our form (the torch.export exporter, each session checked, threads stopped after a call)."""
    try:
        import io

        import onnxruntime as ort
    except ImportError:
        return None
    buf = io.BytesIO()
    args, kwargs = ((), x) if isinstance(x, dict) else ((x,), {})
    try:
        torch.onnx.export(model, args, buf, kwargs=kwargs or None, dynamo=False)
    except Exception:  # noqa: BLE001 - a model the exporter cannot take: no ORT contender, said in the row
        return None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.enable_profiling = profile
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    return session, {i.name: v.numpy() for i, v in zip(session.get_inputs(), list(args) + list(kwargs.values()))}


def _compiled(model, x, frozen: bool):
    """``torch.compile`` of a copy of ``model`` through ``own_compile`` (the bench compiles many models of a
    class in one process: through the class's shared cache, a later one could run an earlier one's code, or
    run eagerly), compiled on its first call here, with Inductor's freezing if asked."""
    comp = own_compile(copy.deepcopy(model))
    with torch.no_grad(), inductor_config().patch(freezing=frozen):
        call(comp, x)
    return comp


QUICK_MODELS = ("nin_cifar", "squeezenet1_1", "mobilenet_v1")
COMPILE_MACS = 2e9  # a model of more MACs a sample is not compiled in the bench (ResNet-50: minutes each way)


def optimized_models(quick: bool, repeat: int, compile_: bool, names=None, skipped=None) -> list:
    """optimize() at batch 8 on zoo models (three in a quick run, every one in a full run, then four real
    models), with its own seconds and the form it kept, beside eager, optimize() in bfloat16,
    optimize(compile=True), torch.compile with and without freezing (below ``COMPILE_MACS``), and
    onnxruntime and OpenVINO as a user runs them (``_engines``). Models that could not be built are named in
    ``skipped`` (a list)."""
    rest = tuple(n for n in list_models() if n not in QUICK_MODELS)
    names = names or (QUICK_MODELS if quick else QUICK_MODELS + rest)
    models = {n: (create_model(n).eval(), torch.randn(8, *model_info(n).input_size), model_info(n).macs)
              for n in names}
    if not quick:
        models.update(_real_models(skipped if skipped is not None else []))
    rows = []
    for name, (model, x, macs) in models.items():
        torch.manual_seed(0)
        start = time.perf_counter()
        opt, report = optimize(model, x)
        seconds = time.perf_counter() - start
        fns = {"eager": lambda: call(model, x), "optimized": lambda: call(opt, x)}
        if capabilities().bf16:
            low, _ = optimize(model, x, dtype=torch.bfloat16)
            fns["optimized_bf16"] = lambda: call(low, x)
        compiled, with_compile = _compile_forms(model, x, macs) if compile_ else ({}, None)
        fns |= compiled | _engines(model, x)
        spread = {}
        t = timeit(fns, repeat, spread=spread)
        flops = 2 * 8 * macs
        row = {"model": name, "batch": 8, "ms": {k: v * 1e3 for k, v in t.items()}, "round_spread": spread,
               "vs_eager": t["eager"] / t["optimized"], "gflops": {k: flops / v / 1e9 for k, v in t.items()},
               "changes": len(report.changed), "max_abs_diff": report.max_abs_diff, "optimize_seconds": seconds,
               "optimize_passes": {p["pass"]: p["seconds"] for p in report.passes}, "kept": _kept(opt)}
        if compile_ and not compiled:
            row["compile_skipped"] = f"{macs / 1e9:.1f} GMACs a sample: compiling it takes minutes"
        peers = [k for k in ("compile", "compile_frozen", *PEER_ENGINES) if k in t]
        row |= {f"vs_{k}": t[k] / t["optimized"] for k in peers}
        if peers:
            row["vs_best_peer"] = min(t[k] for k in peers) / t["optimized"]
        if any(k in t for k in PEER_ENGINES):
            row["vs_best_engine"] = min(t[k] for k in PEER_ENGINES if k in t) / t["optimized"]
        if "optimized_compile" in t:
            row["kept_with_compile"] = _kept(with_compile)
            row["with_compile_vs_best_peer"] = min(t[k] for k in peers) / t["optimized_compile"]
        if "optimized_bf16" in t:
            row["bf16_vs_optimized"] = t["optimized"] / t["optimized_bf16"]
        rows.append(row)
    return rows


def _compile_forms(model, x, macs: int) -> tuple:
    """({label: callable} for optimize(compile=True), torch.compile and torch.compile with freezing; the
    model optimize(compile=True) returned), or ({}, None) above ``COMPILE_MACS`` MACs a sample."""
    if macs > COMPILE_MACS:
        return {}, None
    torch.manual_seed(0)
    with_compile, _ = optimize(model, x, compile=True)  # torch.compile around ours where faster
    comp, frozen = _compiled(model, x, False), _compiled(model, x, True)
    return {"optimized_compile": lambda: call(with_compile, x), "compile": lambda: call(comp, x),
            "compile_frozen": lambda: call(frozen, x)}, with_compile


def _kept(model) -> str:
    """Which form ``optimize`` returned."""
    kinds = ((Compiled, "torch.compile"), (OnnxRuntime, "onnxruntime"), (OpenVino, "OpenVINO"))
    return next((label for cls, label in kinds if isinstance(model, cls)), "the eager rewrite")
