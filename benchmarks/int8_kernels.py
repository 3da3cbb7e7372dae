"""Whose int8 product is fastest for one 1x1 layer on this CPU? The same uint8 rows times the same int8 weights
(per output channel), requantized to uint8, by the three kernels within reach: oneDNN's ``qlinear_pointwise``
(what ``Int8PointwiseChain`` calls), fbgemm's ``quantized.linear`` (torch's x86 int8 backend) and
onnxruntime's ``QLinearMatMul`` (MLAS, what its QDQ models run). Interleaved rounds, glibc's freed memory
held (``bench.hold_freed_memory``); prints GOP/s (2 x MACs) of each at the best and median round.

Run: .venv/bin/python benchmarks/int8_kernels.py [--rounds 40] [--threads 1]    (under a minute)
"""
import argparse
import time
import warnings

import numpy as np
import torch

from onebyone.bench.memory import hold_freed_memory
from onebyone.torch.fast import private

SHAPES = [(4096, 128, 1024), (8192, 64, 128), (4096, 1024, 512)]  # (rows, C in, C out): PointNet's, a ViT MLP's


def contenders(m: int, k: int, n: int) -> dict:
    """{kernel: a call computing uint8 (m, n) = requantize(x (m, k) uint8 @ w.T (k, n) int8)}."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-63, 64, (n, k), dtype=torch.int8, generator=g)  # 7 bits: no saturation without VNNI
    ws, zp = torch.rand(n, generator=g) * 0.01 + 1e-3, torch.zeros(n, dtype=torch.long)
    out = {}
    if private.onednn_int8():
        packed = private.qlinear_prepack(w, m)
        out["oneDNN qlinear_pointwise"] = lambda: private.qlinear_pointwise(x, 0.02, 3, packed, w, ws, None,
                                                                            (0.5, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(w, ws.double(), zp, 0)
        qx = torch._make_per_tensor_quantized_tensor(x, 0.02, 3)
        torch.backends.quantized.engine = "fbgemm"
        fb = torch.ops.quantized.linear_prepack(qw, None)
    out["fbgemm quantized.linear"] = lambda: torch.ops.quantized.linear(qx, fb, 0.5, 0)
    try:
        out["onnxruntime QLinearMatMul"] = _onnxruntime(x.numpy(), w.numpy(), ws.numpy())
    except ImportError:
        print("onnxruntime is not installed: left out")
    return out


def _onnxruntime(x, w, ws):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(a, name) for a, name in [
        (np.float32(0.02), "xs"), (np.uint8(3), "xz"), (np.ascontiguousarray(w.T), "w"), (ws, "ws"),
        (np.zeros(len(ws), np.int8), "wz"), (np.float32(0.5), "ys"), (np.uint8(0), "yz")]]
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [x.shape[0], w.shape[0]])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.force_spinning_stop", "1")  # its threads idle between calls, as in optimize
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None, help="torch's (and onnxruntime's) threads; default torch's")
    args = ap.parse_args()
    rounds = args.rounds
    if args.threads:
        torch.set_num_threads(args.threads)
    hold_freed_memory()
    print(f"{private.capabilities().describe()}, {torch.get_num_threads()} threads")
    for m, k, n in SHAPES:
        fs = contenders(m, k, n)
        for f in fs.values():
            f(), f()  # packed, warmed
        t = {name: [] for name in fs}
        for _ in range(rounds):
            for name, f in fs.items():
                start = time.perf_counter()
                f()
                t[name].append(time.perf_counter() - start)
        gop = 2 * m * k * n / 1e9
        for name, v in t.items():
            print(f"{m} x {k} -> {n}  {name:28s} best {gop / min(v):5.0f} GOP/s  median {gop / np.median(v):5.0f}")


if __name__ == "__main__":
    main()
