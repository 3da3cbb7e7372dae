"""Training in bfloat16 (`--precision bf16`: autocast on the CPU, float32 weights) against float32: seconds
per epoch (the median epoch) and final test accuracy, for nin_digits on digits (30 epochs) and pointnet_cls on
shapes3d at 1,024 points (2 epochs: its time per epoch; the accuracy after 2 epochs is only indicative).

Run: .venv/bin/python benchmarks/train_bf16.py   (about 10 minutes on our machine)
"""
import statistics

from onebyone.train import TrainConfig, train

RUNS = {"nin_digits on digits, 30 epochs": dict(model="nin_digits", data="digits"),
        "pointnet_cls on shapes3d, 1,024 points, 2 epochs": dict(model="pointnet_cls", data="shapes3d", epochs=2,
                                                                 data_kwargs={"n_points": 1024}, batch_size=32)}

if __name__ == "__main__":
    for name, kw in RUNS.items():
        for precision in ("fp32", "bf16"):
            _, metrics = train(TrainConfig(**kw, precision=precision), progress=False)
            epoch = statistics.median(m["seconds"] for m in metrics)
            print(f"{name}, {precision}: {epoch:.2f} s per epoch, test accuracy {metrics[-1]['test_acc']:.2%}",
                  flush=True)
