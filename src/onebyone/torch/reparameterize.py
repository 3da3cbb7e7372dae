"""``reparameterize``: a model's inference form in one call, read from what it computes.

Training-time structure that is linear at inference folds away: eval batch norms into the conv or linear
next to them (``rewrites.fold_all``), parallel linear branches of one tensor into one conv
(``branches.merged_branches``), then norms again, until a round changes nothing. No code per block class:
the same call reaches timm's ``reparameterize_model`` on RepVGG, MobileOne and the other families with a
``reparameterize()`` method, and works on a block timm has never seen.
"""
from __future__ import annotations

from torch import nn

from .branches import merged_branches
from .capture import gc_paused
from .rewrite_report import RewriteReport, finish
from .rewrites import _check_eval, fold_all
from .tensors import copy_model, probe_input

ROUNDS = 8  # each round removes norms or branches; real models settle in two


@gc_paused
def reparameterize(model: nn.Module, example=None, input_size=None, tol: float = 1e-4, *, inplace=False):
    """Fold norms and merge branches until nothing changes; returns (model, RewriteReport).

    ``report.changed`` lists every fold and merge by module path, in the order done; ``report.skipped`` lists
    every norm and every sum left in the final model, each with the reason it stays. The outputs are checked
    in float64 on ``example`` (or a seeded probe of ``input_size``) within ``tol`` of the output scale. Where
    a branch merges the model returned is a ``torch.fx.GraphModule`` (see ``merge_branches``): its ``forward``
    alone; ``inplace=True`` then warns and leaves the model given unchanged.
    """
    _check_eval(model)
    x = probe_input(model, example, input_size)
    work, report = reparameterized(copy_model(model), x, RewriteReport("reparameterize"))
    return finish(report, model, work, x, tol, inplace)


def reparameterized(work: nn.Module, x, report: RewriteReport) -> tuple[nn.Module, RewriteReport]:
    """``reparameterize``'s rewrite of ``work`` itself on the input ``x``, its changes and skips added to
    ``report``, not yet checked: for a caller that checks the outputs itself (``optimize``)."""
    changed = []
    for _ in range(ROUNDS):
        folds, merges = RewriteReport("fold_batchnorm"), RewriteReport("merge_branches")
        work = fold_all(work, x, folds)
        work, merges = merged_branches(work, x, merges)
        changed += folds.changed + merges.changed
        skipped, notes = folds.skipped + merges.skipped, merges.notes
        if not merges.changed:
            break  # a fold after no merge finds nothing new
    report.changed += changed
    report.skipped += skipped
    report.notes += notes
    return work, report
