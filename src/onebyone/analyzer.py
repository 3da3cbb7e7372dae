"""``onebyone.analyze``: one entry point for PyTorch and Keras models; imports neither until it sees one."""
from __future__ import annotations

import warnings

from .checks import check_int
from .errors import OneByOneError, too_large


def _framework(model) -> str | None:
    roots = {c.__module__.split(".")[0] for c in type(model).__mro__}
    # keras first: on the torch backend a Keras layer is also a torch.nn.Module
    return "keras" if "keras" in roots else "torch" if "torch" in roots else None


def analyze(model, input_size=None, example=None, batch_size: int = 1, dtype: str = "float32"):
    """Per-layer params, MACs, FLOPs, activations, bytes and arithmetic intensity of a model.

    Returns a ``ModelStats`` (rows, totals, ``share(by="kind")``, the ops it could not count,
    ``to_dict()`` / ``to_json()`` / ``table()``). MACs are multiply-accumulates, bias excluded;
    FLOPs = 2 x MACs. ``input_size`` is one sample's shape; inputs given in its place (a tensor or array, a
    tuple or dict of them: ``analyze(model, x)``) are the ``example``, whose batch is the batch (a
    ``batch_size`` other than 1 that differs from it is refused). Products it cannot count are named in a
    warning (and in ``uncounted``); the MAC totals and shares are then those of the products counted.
    """
    input_size, example = _size_or_example(input_size, example)
    check_int(batch_size, "batch_size")
    stats = _run(model, input_size, example, batch_size, dtype)
    if example is not None and batch_size != 1 and stats.batch_size != batch_size:
        raise OneByOneError(f"batch_size={batch_size} was given with an example of batch {stats.batch_size}: the "
                            "example's batch is the one analyzed; give the example at that batch, or input_size")
    if stats.uncounted:
        more = len(stats.uncounted) - 3
        warnings.warn(f"analyze: {len(stats.uncounted)} part(s) of {stats.model} not counted (``uncounted`` lists "
                      "them), its MACs are those of the rest: " + "; ".join(
                          f"{n} ({t}): {why}" for n, t, why in stats.uncounted[:3]) + (
                          f"; and {more} more" if more > 0 else ""), stacklevel=2)
    return stats


def _run(model, input_size, example, batch_size: int, dtype: str):
    framework = _framework(model)
    if framework == "torch":
        from .torch.collect import analyze as run
    elif framework == "keras":
        from .keras.collect import analyze as run
    else:
        raise OneByOneError(f"expected a torch.nn.Module or a keras.Model, got {type(model).__name__}")
    try:
        return run(model, input_size=input_size, example=example, batch_size=batch_size, dtype=dtype)
    except (RuntimeError, MemoryError) as e:
        big = too_large(e, f"analyzing {type(model).__name__} at batch_size {batch_size:,} "
                           f"(one sample {input_size or 'as in the example'})")
        if big is None:
            raise
        raise big from None


def _size_or_example(input_size, example) -> tuple:
    """(one sample's shape or None, the example): inputs given as ``input_size`` are the example."""
    if input_size is None:
        return None, example
    values = (list(input_size.values()) if isinstance(input_size, dict) else list(input_size)
              if isinstance(input_size, (tuple, list)) else [input_size])
    if any(hasattr(v, "shape") for v in values):  # a tensor or an array: inputs, not a shape
        if example is not None:
            raise OneByOneError("analyze takes one sample's shape (input_size) or inputs (example), got inputs for "
                                "both: give the inputs once")
        return None, input_size
    if not isinstance(input_size, (tuple, list)):
        raise OneByOneError(f"input_size must be one sample's shape, a tuple of ints (or inputs: a tensor, a tuple or "
                            f"dict of tensors), got a {type(input_size).__name__}: {str(input_size)[:80]}")
    return tuple(check_int(s, "input_size entries") for s in input_size), example


def model_kwargs(pairs) -> dict:
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


def analyze_spec(spec: str, input_size=None, batch_size: int = 1, model_args=()):
    """``analyze`` of the model a name gives (a zoo name, ``timm:NAME``, ``torchvision:NAME`` or
    ``package.module:factory``, built with ``model_args``, ``KEY=VALUE`` strings) at ``input_size`` (default:
    the model's own) and ``batch_size``: what ``onebyone summary`` and ``report`` show."""
    from .zoo import from_spec  # imports torch

    with warnings.catch_warnings(record=True) as said:  # (torch's notices while building a model the
        warnings.simplefilter("always")  # arguments then refuse are noise before the error: said on success)
        model, default_size = from_spec(spec, **model_kwargs(model_args))
    size = tuple(input_size) if input_size else default_size
    if size is None:
        raise OneByOneError(f"{spec} has no default input size: give one sample's shape with "
                            "--input-size, e.g. --input-size 3 224 224")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (what is not counted is a line of the table these commands show)
        stats = analyze(model, input_size=size, batch_size=batch_size)  # a batch too large: says what it needs
    for w in said:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return stats
