"""Does a trained model keep its predictions in bfloat16? The README's two runs (nin_digits on digits,
30 epochs; pointnet_cls on shapes3d, 256 points, 8 epochs), each `optimize()`d in float32 and in bfloat16,
then evaluated on the whole test split: top-1 agreement with the float32 model and the two accuracies.

Run: .venv/bin/python benchmarks/bf16_accuracy.py   (trains both: about 4 minutes on our machine)
"""
import torch

from onebyone import data
from onebyone.torch import optimize
from onebyone.train import TrainConfig, train

RUNS = {"nin_digits on digits": TrainConfig("nin_digits", "digits"),
        "pointnet_cls on shapes3d (256 points)": TrainConfig("pointnet_cls", "shapes3d", epochs=8,
                                                             data_kwargs={"n_points": 256})}

if __name__ == "__main__":
    for name, cfg in RUNS.items():
        model, _ = train(cfg, progress=False)
        model.eval()
        x, y = data.load(cfg.data, "test", **cfg.data_kwargs)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        fp32, _ = optimize(model, x[:32])
        bf16, report = optimize(model, x[:32], dtype=torch.bfloat16)
        with torch.no_grad():
            a, b = fp32(x).argmax(1), bf16(x).argmax(1)
        print(f"{name}: {len(y)} test samples; top-1 agreement {float((a == b).float().mean()):.2%}; accuracy "
              f"float32 {float((a == y).float().mean()):.2%}, bfloat16 {float((b == y).float().mean()):.2%}; "
              f"output error on 32 samples {report.precision['relative']:.2%} of the scale")
