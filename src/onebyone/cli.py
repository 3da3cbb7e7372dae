"""The ``onebyone`` command. Subcommands import torch / keras only when they need them."""
from __future__ import annotations

import argparse
import math
import os
import sys

from .errors import OneByOneError, too_large


def _tour(args) -> int:
    from .checks import check_writable
    from .tour import render, run_tour
    from .webpage import check_page_folder

    if args.html is not None:
        check_page_folder(check_writable(args.html, "--html"))

    lessons = run_tour(only=args.lesson or None, seed=args.seed)
    if args.json:
        print(render.to_json(lessons))
    else:
        print(render.text(lessons, color=sys.stdout.isatty()))
    if args.html is not None:
        from .tour.tour_page import write_tour

        print(f"wrote {write_tour(lessons, args.html)}", file=sys.stderr if args.json else sys.stdout)
    return 0 if all(L.passed for L in lessons) else 1


def _lessons(args) -> int:
    from .tour.core import REGISTRY

    for spec in REGISTRY:
        print(f"{spec.id:18s} {spec.title}")
    return 0


def _print_rich(stats, depth) -> bool:
    try:
        from rich.console import Console
    except ImportError:
        return False
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(stats.rich_table(depth))
    for line in stats.summary_lines():
        console.print(line, markup=False)
    return True


def _factory_kwargs(pairs) -> dict:
    """``KEY=VALUE`` strings -> keyword arguments; a VALUE is a Python literal (10, None, 'a', (3, 3)) or
    else the string itself."""
    import ast

    out = {}
    for pair in pairs or ():
        key, eq, value = pair.partition("=")
        if not eq or not key.isidentifier():
            raise OneByOneError(f"--model-arg expects KEY=VALUE with a Python name as KEY, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _analyze(args):
    """The ModelStats of ``args.model`` at ``--input-size`` (default: the zoo's) and ``--batch-size``."""
    from .analyzer import analyze
    from .zoo import from_spec  # imports torch

    model, default_size = from_spec(args.model, **_factory_kwargs(args.model_arg))
    size = tuple(args.input_size) if args.input_size else default_size
    if size is None:
        raise OneByOneError(f"{args.model} has no default input size: give one sample's shape with "
                            "--input-size, e.g. --input-size 3 224 224")
    try:
        return analyze(model, input_size=size, batch_size=args.batch_size)
    except (RuntimeError, MemoryError) as e:
        big = too_large(e, f"analyzing {args.model} at --batch-size {args.batch_size:,} (one sample {size})")
        if big is None:
            raise
        raise OneByOneError(f"{big}: use a smaller --batch-size (every count scales with it)") from None


def _summary(args) -> int:
    stats = _analyze(args)
    if args.json:
        print(stats.to_json())
    elif args.csv:
        print(stats.to_csv(), end="")
    elif not _print_rich(stats, args.depth):
        print(stats.table(args.depth))
    return 0


def _report(args) -> int:
    from .checks import check_writable
    from .model_page import write_report
    from .webpage import check_page_folder

    bench = None
    if args.bench:
        from .plots import read_bench

        bench = read_bench(args.bench)
    check_page_folder(check_writable(args.html, "--html"))
    stats = _analyze(args)
    path = write_report(stats, args.html, bench)
    print(f"wrote {path}: {stats.footer()}")
    return 0


def _train(args) -> int:
    from pathlib import Path

    from . import checkpoint
    from .checks import check_writable
    from .train import TrainConfig, data_spec, read_config, read_state, resume_conflicts, train

    given = {"model": args.model, "data": data_spec(args.data) if args.data else None, "batch_size": args.batch_size,
             "lr": args.lr, "seed": args.seed, "size": args.size, "n_points": args.points, "precision": args.precision}
    if args.resume:
        if args.overwrite:
            raise OneByOneError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        if not args.out:
            raise OneByOneError("--resume needs --out, the folder of the run to continue")
        out = Path(args.out)
        if checkpoint.folder(out) is None:
            raise OneByOneError(f"--resume: {out} holds no run written by `onebyone train`")
        cfg = read_config(out)
        conflicts = resume_conflicts(cfg, given)
        if conflicts:
            raise OneByOneError(f"--resume continues the run in {out} as it was saved; these options differ: "
                                f"{'; '.join(conflicts)}. Leave them out, or start a new run with another --out")
        done = read_state(out)[0]["epoch"]
        cfg.epochs = args.epochs or cfg.epochs
        if done >= cfg.epochs:
            print(f"nothing to do: the run in {out} finished epoch {done} of {cfg.epochs}; "
                  f"pass --epochs N with N > {done} to train it further")
            return 0
    else:
        if not args.data:
            raise OneByOneError("--data is required: digits, shapes3d, a folder of class subfolders, or an .npz file")
        out = Path(args.out) if args.out else checkpoint.new_run_folder("runs", f"{args.model}-{Path(args.data).stem}")
        if checkpoint.folder(out) is not None and not out.is_file() and not args.overwrite:
            saved = read_config(out)
            raise OneByOneError(f"{out} holds a run ({saved.model} on {saved.data}); pass --resume to continue "
                                "it, --overwrite to replace it (only what that run wrote), or another --out")
        kw = {"size": args.size} if args.size else {}
        kw.update({"n_points": args.points} if args.points else {})
        cfg = TrainConfig(args.model, given["data"], args.epochs or 30, args.batch_size or 64, args.lr or 3e-3,
                          seed=args.seed or 0, data_kwargs=kw, precision=args.precision or "fp32")
    check_writable(out, "--out")
    if not (args.overwrite and checkpoint.folder(out) is not None):
        checkpoint.check_run_folder(out, args.resume)  # before the data loads: a folder of the user's is refused
    args.run_folder = out  # for the message on Ctrl-C
    _, metrics = train(cfg, out=out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if metrics:
        last = metrics[-1]
        print(f"{cfg.model} on {cfg.data}: epoch {last['epoch']}, test accuracy {last['test_acc']:.4f}; "
              f"checkpoint in {out}/checkpoint (model.safetensors, config.json, metrics.json)")
    return 0


def _maps(args) -> int:
    import numpy as np

    from . import data
    from .checks import check_writable_file
    from .torch.maps import draw_canvas, draw_maps
    from .train import load_checkpoint

    model, cfg = load_checkpoint(args.checkpoint)
    labels = cfg.classes or data.class_names(cfg.data, cfg.num_classes)  # as trained: the checkpoint names them
    xte, _ = data.load(cfg.data, "test", **cfg.data_kwargs)
    size = tuple(xte.shape[1:])
    if len(size) != 3:
        raise OneByOneError(f"maps need an image model; {cfg.model} on {cfg.data} takes samples of shape {size}")
    out = args.out or ("canvas.png" if args.canvas else "maps.png")
    if not str(out).lower().endswith(".png"):
        raise OneByOneError(f"--out names the PNG to write; got {out!r} (end it in .png)")
    check_writable_file(out, "--out")
    images, from_file = data.images_from_spec(args.image, xte)
    bad = [i for i, im in enumerate(images) if not np.isfinite(im).all()]
    if bad:
        raise OneByOneError(f"{args.image} holds NaN or infinite values; expected a finite image")
    want = "x".join(map(str, size))
    got = "x".join(map(str, images[0].shape))
    if images[0].shape[0] != size[0]:
        raise OneByOneError(
            f"{cfg.model} takes {size[0]}-channel images ({want}); "
            f"{args.image} has {images[0].shape[0]} channel(s) ({got})"
        )
    if args.canvas:
        canvas = images[0] if from_file else data.compose_canvas(images, seed=args.seed)
        if canvas.shape[1] < size[1] or canvas.shape[2] < size[2]:
            raise OneByOneError(f"a canvas must be at least {want}; {args.image} is {got}")
        path, probs = draw_canvas(model, canvas, size, out, labels)
        print(f"wrote {path}: {probs.shape[1]}x{probs.shape[2]} windows of {size[1]}x{size[2]}, {len(labels)} classes")
        return 0
    if len(images) != 1 or images[0].shape != size:
        raise OneByOneError(f"{cfg.model} takes one {want} image (channels x height x width); got "
                            f"{len(images)} image(s) of {got} (use --canvas for larger images or several digits)")
    path, probs = draw_maps(model, images[0], out, labels)
    print(f"wrote {path}: predicted {labels[int(probs.argmax())]} ({probs.max():.1%})")
    return 0


def _bench(args) -> int:
    from . import bench
    from .checks import check_writable_file

    bad = set(args.sections) - set(bench.SECTIONS)
    if bad or not args.sections:
        raise OneByOneError(f"--sections takes letters from {bench.SECTIONS!r}, got {args.sections!r}")
    if args.png and not set(args.sections) & {"a", "b"}:
        raise OneByOneError(f"--png draws the roofline of sections a and b; --sections {args.sections} has neither")
    for path, flag in ((args.json, "--json"), (args.png, "--png")):
        if path is not None:
            check_writable_file(path, flag)  # before the minutes of timing, not after
    if args.json and args.png and os.path.realpath(args.json) == os.path.realpath(args.png):
        raise OneByOneError(f"--json and --png name the same file {args.json}: the figure would replace the results")
    result = bench.run(args.sections, quick=args.quick, compile_=not args.no_compile, runs=args.runs,
                       save=lambda partial: bench.write(partial, args.json))  # each finished run kept as it goes
    bench.write(result, args.json, args.png)
    print("\n".join(bench.summary(result)))
    if args.json:
        print(f"wrote {args.json}" + (f" and {args.png}" if args.png else ""))
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
    sm.add_argument("--depth", type=_integer(0), default=None, help="fold rows deeper than this many name levels")
    fmt = sm.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the rows and totals as JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print the rows as CSV instead of a table")
    sm.set_defaults(fn=_summary)
    rp = sub.add_parser("report", help="an HTML page for a model: table, MACs and params by kind, dominating layers")
    _model_args(rp)
    rp.add_argument("--html", required=True, metavar="DIR", help="write DIR/index.html and DIR/figures/")
    rp.add_argument(
        "--bench", default=None, metavar="JSON", help="a file from `onebyone bench --json`: adds its roofline"
    )
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
    mp.add_argument(
        "--canvas",
        action="store_true",
        help="slide the classifier over a larger canvas and show where each class fires",
    )
    mp.add_argument("--seed", type=_integer(0, SEEDS), default=0,
                    help="where the samples land on the canvas (default 0)")
    mp.set_defaults(fn=_maps)


def _bench_parser(sub) -> None:
    bn = sub.add_parser("bench", help="measure the speed claims side by side; ratios, JSON and a roofline PNG")
    bn.add_argument("--json", default=None, metavar="OUT", help="write every measurement to this JSON file")
    bn.add_argument("--png", default=None, metavar="OUT", help="write the roofline plot (PNG)")
    bn.add_argument("--quick", action="store_true", help="smaller sizes (batch 8 in b), 3 repeats instead of 7, "
                    "three zoo models in (e) (nin_cifar, squeezenet1_1, mobilenet_v1) instead of every one and three "
                    "transformers models")
    bn.add_argument("--sections", default="abcdef", help="which of a b c d e f to run (default all)")
    bn.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparisons")
    bn.add_argument("--runs", type=_integer(1), default=1,
                    help="run everything this many times, >= 1; headlines are medians (with ranges)")
    bn.set_defaults(fn=_bench)


# command -> the modules it imports and the extra that brings each: checked before any work
NEEDS = {"summary": ("torch",), "report": ("torch", "matplotlib"), "train": ("torch", "safetensors", "sklearn", "PIL"),
         "maps": ("torch", "safetensors", "matplotlib", "PIL"), "bench": ("torch", "rich")}
EXTRA = {"torch": "torch", "safetensors": "torch", "rich": "torch", "sklearn": "data", "PIL": "data",
         "matplotlib": "data"}


def _missing(args) -> list:
    """The modules ``args.command`` needs (``NEEDS``; figures need matplotlib) that are not installed."""
    import importlib.util

    need = list(NEEDS.get(args.command, ()))
    if getattr(args, "html", None) or getattr(args, "png", None):
        need.append("matplotlib")
    return [m for m in dict.fromkeys(need) if importlib.util.find_spec(m) is None]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        missing = _missing(args)
        if missing:
            extras = ",".join(dict.fromkeys(EXTRA[m] for m in missing))
            raise OneByOneError(f"`onebyone {args.command}` needs {', '.join(missing)}, not installed here: "
                                f"pip install 'onebyone[{extras}]'")
        return args.fn(args)
    except OneByOneError as e:
        print(f"onebyone: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"onebyone: interrupted{_where_to_resume(args)}", file=sys.stderr)
        return 130


def _where_to_resume(args) -> str:
    """After Ctrl-C in `train`: where the last complete checkpoint is, and the command that continues it."""
    out = getattr(args, "run_folder", None)
    if args.command != "train" or out is None:
        return ""
    from . import checkpoint

    if checkpoint.folder(out) is None:
        return f"; no epoch had finished, so {out} holds no checkpoint yet"
    epoch = checkpoint.read_json(out, "state.json").get("epoch")
    return (f"; the last complete checkpoint is epoch {epoch} in {out}/checkpoint. Continue with: "
            f"onebyone train {args.model} --out {out} --resume")


if __name__ == "__main__":
    sys.exit(main())
