"""Section (g) of ``onebyone bench``: int8 side by side. Per model at batch 8: ``optimize(dtype=torch.int8)``
(its own calibration and race), ``optimize()`` in float32 and (where the CPU has bfloat16 products) in
bfloat16, eager, each engine in float32 (OpenVINO also in bfloat16 there) and each engine's int8 as a user
makes it (the float model's export quantized by onnxruntime's ``quantize_static`` and by NNCF for OpenVINO,
on the same calibration batches), each form's error against float32 on a batch none of them calibrated on."""
from __future__ import annotations

import math
import time
from collections import Counter

import torch

from ..errors import OneByOneError
from ..torch import Pointwise, optimize
from ..torch.capture import calls_of
from ..torch.fast import OnnxRuntime, OpenVino, capabilities
from ..torch.fast.int8 import split
from ..torch.fast.int8_engines import OnnxRuntimeInt8, OpenVinoInt8
from ..torch.fast.int8_torch import error, expected, plain_layers
from ..torch.tensors import call
from ..zoo import create_model, model_info

QUICK = ("nin_cifar", "mobilenet_v1")
MODELS = ("nin_cifar", "squeezenet1_1", "mobilenet_v1", "pointnet_cls")
CALIBRATION = 4  # batches of 8


def int8_models(quick: bool, repeat: int, timeit, names=None, skipped=None) -> list:
    """One row per model: ms a call of each contender (eager; ``optimized``, ``optimized_bf16``,
    ``optimized_int8``: ``optimize()`` in each dtype; each engine in float32, bfloat16 and int8, as
    ``engine_forms`` names them), ``int8_vs_best_int8_engine``, ``int8_vs_float32``
    (``optimize()`` in int8 against ``optimize()`` in float32), each form's ``error`` (max difference from
    float32 relative to its output scale), the form ``optimize`` kept and its seconds, and ``race_ms`` and
    ``race_error``: each int8 form's ms and error (on its held-out calibration batch) in optimize's own race;
    ``torch_kernels``: how many of torch's int8 layers run each library's kernels.
    The engines' forms calibrate on the batches optimize observes ranges on. An engine form that cannot be
    made, or a model optimize fails on, is named in ``skipped``."""
    rows, skipped = [], skipped if skipped is not None else []
    for name in names or (QUICK if quick else MODELS):
        torch.manual_seed(0)  # the same random weights in every run: runs differ by their timings alone
        model = create_model(name).eval()
        g = torch.Generator().manual_seed(0)
        shape = (8, *model_info(name).input_size)
        batches = [torch.randn(shape, generator=g) for _ in range(CALIBRATION + 1)]
        cal, x = batches[:CALIBRATION], batches[CALIBRATION]  # x: calibrated on by no form
        model = unit_outputs(model, cal[0][:2])
        start = time.perf_counter()
        try:
            int8, report = optimize(model, cal[0], dtype=torch.int8, calibration=cal)
        except Exception as e:  # noqa: BLE001 - one model's failure is named; the other models still run
            skipped.append(f"(g) {name} optimize int8: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            continue
        seconds = time.perf_counter() - start
        f32, _ = optimize(model, cal[0])
        forms = {"eager": model, "optimized": f32, "optimized_int8": int8}
        if capabilities().bf16:
            try:
                forms["optimized_bf16"], _ = optimize(model, cal[0], dtype=torch.bfloat16)
            except OneByOneError as e:  # its error past dtype_tol: named
                skipped.append(f"(g) {name} optimize bfloat16: {str(e).splitlines()[0][:160]}")
        forms |= engine_forms(name, model, cal, x, skipped)
        want = expected(model, [x])
        errors = {k: error(f, want, [x]) for k, f in forms.items() if k != "eager"}
        t = timeit({k: (lambda f=f: call(f, x)) for k, f in forms.items()}, repeat)
        row = {"model": name, "batch": 8, "ms": {k: v * 1e3 for k, v in t.items()}, "error": errors,
               "kept": report.precision.get("kept", "float32"), "int8_seconds": seconds,
               "race_ms": {k: f.get("ms") for k, f in report.precision["forms"].items()},  # optimize's own timing
               "race_error": {k: f["relative_error"] for k, f in report.precision["forms"].items()},  # held out
               "torch_kernels": dict(Counter(report.precision.get("torch_kernels", {}).values())),  # layers each
               "int8_vs_float32": t["optimized"] / t["optimized_int8"],
               "int8_vs_eager": t["eager"] / t["optimized_int8"]}
        engines = [k for k in ("onnxruntime_int8", "openvino_int8") if k in t]
        if engines:
            row["int8_vs_best_int8_engine"] = min(t[k] for k in engines) / t["optimized_int8"]
        rows.append(row)
    return rows


def engine_forms(name: str, model, cal: list, x, skipped: list) -> dict:
    """{label: form} of each engine: in float32, OpenVINO also in bfloat16 (where the CPU has bfloat16
    products), and in int8 calibrated on the batches ``optimize`` observes ranges on; one ONNX export for all.
    Each is made (exported, quantized, compiled) here, not in the timing; one that cannot be is named in
    ``skipped``."""
    plain, observe, exports = plain_layers(model, cal[0]), split(cal)[0], {}
    makers = {"onnxruntime": lambda: OnnxRuntime(plain, tol=math.inf, exports=exports),
              "openvino": lambda: OpenVino(plain, tol=math.inf, exports=exports)}
    if capabilities().bf16:
        makers["openvino_bf16"] = lambda: OpenVino(plain, tol=math.inf, exports=exports, precision="bf16")
    makers |= {"onnxruntime_int8": lambda: OnnxRuntimeInt8(plain, observe, tol=math.inf, exports=exports),
               "openvino_int8": lambda: OpenVinoInt8(plain, observe, tol=math.inf, exports=exports)}
    forms = {}
    for label, make in makers.items():
        try:
            form = make()
            with torch.no_grad():
                form(x)
            forms[label] = form
        except Exception as e:  # noqa: BLE001 - not installed, or an export that fails: named
            skipped.append(f"(g) {name} {label}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return forms


def unit_outputs(model, x):
    """``model`` with each conv and Linear (in order) rescaled so that its output has unit standard deviation on
    ``x`` (LSUV's idea): freshly initialised zoo models otherwise give nearly the same output for any input
    (mobilenet_v1's logits vary across samples by 1e-15 of their size), and an int8 error measured on them
    means nothing."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, Pointwise)):
                first, _ = calls_of(model, x, [m])
                if m in first and isinstance(first[m][2], torch.Tensor):
                    std = float(first[m][2].std())
                    if std > 0:
                        m.weight.div_(std)
                        if m.bias is not None:
                            m.bias.div_(std)
    return model
