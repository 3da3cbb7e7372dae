"""The ``onebyone`` command. Subcommands import torch / keras only when they need them."""
from __future__ import annotations

import argparse
import math
import sys

from .errors import OneByOneError
from .extras import check_installed


def _tour(args) -> int:
    from .tour import render, run_tour
    from .webpage import check_page_folder

    if args.html is not None:
        check_page_folder(args.html)  # before the lessons run
    lessons = run_tour(only=args.lesson or None, seed=args.seed)
    print(render.to_json(lessons) if args.json else render.text(lessons, color=sys.stdout.isatty()))
    if args.html is not None:
        from .tour.tour_page import write_tour

        print(f"wrote {write_tour(lessons, args.html)}", file=sys.stderr if args.json else sys.stdout)
    return 0 if all(L.passed for L in lessons) else 1


def _lessons(args) -> int:
    from .tour.core import REGISTRY

    for spec in REGISTRY:
        print(f"{spec.id:18s} {spec.title}")
    return 0


def _analyze(args):
    from .analyzer import analyze_spec

    return analyze_spec(args.model, args.input_size, args.batch_size, args.model_arg)


def _summary(args) -> int:
    stats = _analyze(args)
    if args.json or args.csv:
        print(stats.to_json() if args.json else stats.to_csv(), end="\n" if args.json else "")
    else:
        stats.print(None if args.depth is None else args.depth - 1)  # (rows count their levels from 0)
    return 0


def _report(args) -> int:
    from .model_page import write_report
    from .plots import read_bench
    from .webpage import check_page_folder

    bench = read_bench(args.bench) if args.bench else None
    check_page_folder(args.html)  # before the model is built
    stats = _analyze(args)
    print(f"wrote {write_report(stats, args.html, bench)}: {stats.footer()}")
    return 0


def _train(args) -> int:
    from .runs import start_run
    from .train import train

    cfg, out = start_run(args.model, args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, size=args.size, n_points=args.points, precision=args.precision,
                         resume=args.resume, overwrite=args.overwrite)
    if cfg is None:
        print(out)  # why there is nothing to do
        return 0
    args.run_folder = out  # for the message on Ctrl-C
    _, metrics = train(cfg, out=out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if metrics:
        last = metrics[-1]
        print(f"{cfg.model} on {cfg.data}: epoch {last['epoch']}, test accuracy {last['test_acc']:.4f}; "
              f"checkpoint in {out}/checkpoint (model.safetensors, config.json, metrics.json)")
    return 0


def _maps(args) -> int:
    from .runs import draw_run_maps

    path, what = draw_run_maps(args.checkpoint, args.image, args.out, canvas=args.canvas, seed=args.seed)
    print(f"wrote {path}: {what}")
    return 0


def _bench(args) -> int:
    from . import bench

    replaced = bench.check_outputs(args.sections, args.json, args.png)  # before the minutes of timing
    result = bench.run(args.sections, quick=args.quick, compile_=not args.no_compile, runs=args.runs,
                       save=lambda partial: bench.write(partial, args.json))  # each finished run kept as it goes
    bench.write(result, args.json, args.png)
    print("\n".join(bench.summary(result)))
    if args.json or args.png:
        print("wrote " + " and ".join(f"{p}{' (an earlier result replaced)' * (p in replaced)}"
                                      for p in (args.json, args.png) if p))
    return 0


def _integer(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in [minimum, maximum], refused with the range in the message."""
    want = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum:,}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if value < minimum or maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected {want}, got {value:,}")
        return value
    parse.__name__ = want
    return parse


SEEDS = 2**31 - 1  # the largest seed every generator here takes (torch's per-epoch seed is derived from it)


def _positive_float(text: str) -> float:
    """An argparse type: a learning rate, a finite number > 0 and <= 1000."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > 1e3:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 and <= 1000, got {text}")
    return value


def _model_args(p) -> None:
    """MODEL, --input-size and --batch-size, as `summary` and `report` take them."""
    p.add_argument("model", help="a zoo name, timm:NAME or torchvision:NAME (random weights, at their published "
                                 "input size), or package.module:factory")
    p.add_argument("--input-size", type=_integer(1), nargs="+", metavar="N",
                   help="one sample's shape, each size >= 1, e.g. 3 224 224")
    p.add_argument("--batch-size", type=_integer(1), default=1, help="samples in the analyzed batch, >= 1 (default 1)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="a keyword argument for the model's factory, e.g. num_classes=10 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="onebyone", description="The 1x1 convolution, understood and used.")
    p.add_argument("--version", action="version", version=f"onebyone {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tour", help="run every lesson: each seed claim computed and verified")
    t.add_argument("--json", action="store_true", help="print the lessons and checks as JSON")
    t.add_argument("--lesson", action="append", metavar="ID", help="run only this lesson (repeatable)")
    t.add_argument("--seed", type=_integer(0, SEEDS), default=0,
                   help="seed of the random arrays, 0 to 2**31-1 (default 0)")
    t.add_argument("--html", default=None, metavar="DIR", help="write DIR/index.html with a figure per lesson")
    t.set_defaults(fn=_tour)
    sm = sub.add_parser("summary", help="params, MACs and memory per layer of a model, and the 1x1 share")
    _model_args(sm)
    sm.add_argument("--depth", type=_integer(1), default=None, help="rows to this many name levels (1: top-level)")
    fmt = sm.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the rows and totals as JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print the rows as CSV instead of a table")
    sm.set_defaults(fn=_summary)
    rp = sub.add_parser("report", help="an HTML page for a model: table, MACs and params by kind, dominating layers")
    _model_args(rp)
    rp.add_argument("--html", required=True, metavar="DIR", help="write DIR/index.html and DIR/figures/")
    rp.add_argument("--bench", default=None, metavar="JSON", help="a file from `onebyone bench --json`: adds its "
                    "roofline")
    rp.set_defaults(fn=_report)
    _train_parser(sub)
    _maps_parser(sub)
    _bench_parser(sub)
    ls = sub.add_parser("lessons", help="list the lesson ids")
    ls.set_defaults(fn=_lessons)
    return p


def _train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train a zoo model on an offline dataset (also under torchrun for DDP)")
    tr.add_argument("model", help="a zoo name, e.g. nin_digits or pointnet_cls")
    tr.add_argument("--data", default=None, help="digits, shapes3d, a folder of class subfolders, or an .npz "
                    "(required for a new run)")
    tr.add_argument("--epochs", type=_integer(1), default=None, help="epochs, >= 1 (default 30; with --resume: "
                    "the total to reach)")
    tr.add_argument("--batch-size", type=_integer(1), default=None, help="samples per step, >= 1 (default 64; "
                    "per process under torchrun)")
    tr.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate of AdamW, > 0 (default "
                    "0.003, cosine schedule)")
    tr.add_argument("--seed", type=_integer(0, SEEDS), default=None, help="seed of the weights, shuffling and dropout "
                    "(default 0)")
    tr.add_argument("--size", type=int, choices=(8, 28), default=None, help="digits only: 8 or 28 (default 8)")
    tr.add_argument("--points", type=_integer(1), default=None, help="shapes3d only: points per cloud "
                    "(default 1024)")
    tr.add_argument("--out", default=None, help="the run folder (default: a new folder runs/MODEL-DATA-TIME)")
    tr.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace the run saved in --out (only what "
                    "that run wrote)")
    tr.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="bf16: products in bfloat16 "
                    "(autocast), weights and checkpoints in float32 (default fp32)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=_train)


def _maps_parser(sub) -> None:
    mp = sub.add_parser("maps", help="draw the class maps of a trained model with a 1x1-conv head (PNG)")
    mp.add_argument("checkpoint", help="a folder written by `onebyone train`")
    mp.add_argument("image", help="an image file (.png, .jpg, .npy) or test:N (sample N of the test split); "
                    "with --canvas, test:N,M,... places several samples on one canvas")
    mp.add_argument("--out", default=None, help="PNG to write (default maps.png, or canvas.png with --canvas)")
    mp.add_argument("--canvas", action="store_true",
                    help="slide the classifier over a larger canvas and show where each class fires")
    mp.add_argument("--seed", type=_integer(0, SEEDS), default=0,
                    help="where the samples land on the canvas (default 0)")
    mp.set_defaults(fn=_maps)


def _bench_parser(sub) -> None:
    bn = sub.add_parser("bench", help="measure the speed claims side by side; ratios, JSON and a roofline PNG")
    bn.add_argument("--json", default=None, metavar="OUT", help="write every measurement to this JSON file")
    bn.add_argument("--png", default=None, metavar="OUT", help="write the roofline plot (PNG)")
    bn.add_argument("--quick", action="store_true", help="smaller sizes (batch 8 in b, 2 in f), 3 repeats instead "
                    "of 7, three zoo models in (e) (nin_cifar, squeezenet1_1, mobilenet_v1) instead of every zoo "
                    "model and four transformers models, two in (g)")
    bn.add_argument("--sections", default="abcdefg", help="which of a b c d e f g to run (default all)")
    bn.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparisons")
    bn.add_argument("--runs", type=_integer(1), default=1,
                    help="run everything this many times, >= 1; headlines are medians (with ranges)")
    bn.set_defaults(fn=_bench)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_installed(args.command, figures=bool(getattr(args, "html", None) or getattr(args, "png", None)))
        return args.fn(args)
    except (OneByOneError, OSError) as e:  # OSError: a folder it may not write, a full disk: said, no traceback
        said = f"{e.strerror}{f': {e.filename}' if e.filename else ''}" if getattr(e, "strerror", None) else e
        print(f"onebyone: error: {said}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # after Ctrl-C in train: where its last checkpoint is, and how to continue
        out = getattr(args, "run_folder", None)
        if out is not None:
            from .runs import resume_hint
        print(f"onebyone: interrupted{resume_hint(out, args.model) if out is not None else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
