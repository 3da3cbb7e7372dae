"""Does a trained model keep its accuracy in int8? The zoo's trained runs (nin_digits on digits, 30 epochs;
pointnet_cls and pointnet_vanilla on shapes3d, 256 points, 8 epochs), each quantized by
``optimize(dtype=torch.int8)`` with 8 calibration batches of 32 training samples, then every int8 form
evaluated on the whole test split: top-1 accuracy beside float32's, agreement with float32's predictions, and
the output error on held-out calibration data. Writes ``benchmarks/int8_accuracy.json``, or ``--out``.

Run: .venv/bin/python benchmarks/int8_accuracy.py [--out FILE] [--only NAME ...]   (all three: about 6 minutes
on our 2-core machines; ``--only pointnet_vanilla`` the runs of that model alone)
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from onebyone import data
from onebyone.torch import optimize
from onebyone.torch.fast import private
from onebyone.train import TrainConfig, train

RUNS = {"nin_digits on digits": TrainConfig("nin_digits", "digits"),
        "pointnet_cls on shapes3d (256 points)": TrainConfig("pointnet_cls", "shapes3d", epochs=8,
                                                             data_kwargs={"n_points": 256}),
        "pointnet_vanilla on shapes3d (256 points)": TrainConfig("pointnet_vanilla", "shapes3d", epochs=8,
                                                                 data_kwargs={"n_points": 256})}
OUT = Path(__file__).with_name("int8_accuracy.json")


def top1(model, x, batch=256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])


def one(cfg: TrainConfig) -> dict:
    model, _ = train(cfg, progress=False)
    model.eval()
    xtr, _ = data.load(cfg.data, "train", **cfg.data_kwargs)
    x, y = (torch.from_numpy(a) for a in data.load(cfg.data, "test", **cfg.data_kwargs))
    calibration = [torch.from_numpy(xtr[i:i + 32]) for i in range(0, 8 * 32, 32)]
    forms = {}

    def evaluate(m) -> float:  # optimize's accuracy gate, on the whole test split; each form's predictions kept
        pred = top1(m, x)
        forms[len(forms)] = pred
        return 100.0 * float((pred == y).float().mean())

    opt, report = optimize(model, calibration[0], dtype=torch.int8, calibration=calibration, evaluate=evaluate)
    p = report.precision
    fp32 = top1(model, x)
    row = {"test_samples": len(y), "float32_accuracy": 100.0 * float((fp32 == y).float().mean()),
           "kept": p.get("kept", "float32"), "forms": {}}
    preds = list(forms.values())[1:]  # the first evaluate call is the float32 rewrite's
    for (label, f), pred in zip(((k, v) for k, v in p["forms"].items() if "accuracy" in v), preds):
        row["forms"][label] = {"accuracy": f["accuracy"], "agreement": 100.0 * float((pred == fp32).float().mean()),
                               "relative_error": f["relative_error"], "float32_layers": f["float32_layers"]}
    for label, f in p["forms"].items():  # forms past dtype_tol: no accuracy was measured
        row["forms"].setdefault(label, {"relative_error": f["relative_error"], "accuracy": None})
    row["skipped"] = [list(s) for s in report.skipped if "int8" in s[0]]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", nargs="*", default=None, help="model names (nin_digits, pointnet_cls, ...)")
    args = ap.parse_args()
    caps = private.capabilities()
    result = {"machine": f"{platform.processor() or platform.machine()}; {caps.describe()}",
              "torch": torch.__version__, "runs": {}}
    for name, cfg in RUNS.items():
        if args.only and cfg.model not in args.only:
            continue
        result["runs"][name] = one(cfg)
        r = result["runs"][name]
        print(f"{name}: float32 {r['float32_accuracy']:.2f}%; " + "; ".join(
            f"{k} {v['accuracy']:.2f}% (agrees {v['agreement']:.2f}%)" for k, v in r["forms"].items()
            if v.get("accuracy") is not None) + f"; kept {r['kept']}", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
