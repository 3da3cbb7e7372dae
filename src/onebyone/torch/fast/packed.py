"""``Packed``: weights reordered once for oneDNN, held by the module that owns the weights, and
``Kernels``: the kernel a fast layer runs for each input, chosen by ``optimize()`` and kept with the layer."""
from __future__ import annotations

import torch


class Packed:
    """What ``make()`` built from ``weights`` (oneDNN's blocked copies of them), kept per ``key`` while the
    weights stay the same: the same tensor objects, with the same storage, shapes and versions.

    Safe by construction: it holds the tensors it packed and a view of their storage, so no other tensor
    can take their place or their memory while an entry lives; a new Parameter, a ``.data`` swap, a
    ``load_state_dict`` or any in-place edit makes the next call pack again. (Writes that bypass torch's
    version counter, through ``w.data`` (``w.data.copy_(...)``, ``w.data[mask] = 0``) or a NumPy view of a
    weight, are not seen, as autograd does not see them.)
    At most ``size`` keys. A copy or a pickle starts empty: oneDNN tensors have no storage to copy.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._source, self._stamp, self._made = (), (), {}

    def get(self, weights, key, make):
        weights = tuple(weights)
        stamp = tuple((w.data_ptr(), tuple(w.shape), version(w)) for w in weights)
        same = len(weights) == len(self._source) and all(a is b for a, (b, _) in zip(weights, self._source))
        if not same or stamp != self._stamp:
            self._source = tuple((w, w.detach()) for w in weights)  # the tensors, and a view holding their storage
            self._stamp, self._made = stamp, {}
        if key not in self._made:
            if len(self._made) >= self.size:
                self._made.clear()
            self._made[key] = make()
        return self._made[key]

    def __len__(self) -> int:
        return len(self._made)

    def __deepcopy__(self, memo):
        return Packed(self.size)

    def __reduce__(self):
        return Packed, (self.size,)


def version(t: torch.Tensor) -> int:
    """``t``'s version counter; -1 for a tensor made under ``torch.inference_mode``, which has none (it can be
    written only in that mode, where nothing tracks writes)."""
    return -1 if t.is_inference() else t._version


def input_key(x: torch.Tensor) -> tuple:
    """What a kernel choice is kept under: the input's shape and dtype, e.g. ((8, 64, 56, 56), 'float32')."""
    return tuple(x.shape), str(x.dtype).removeprefix("torch.")


class Kernels(dict):
    """input key (``input_key``) -> the kernel's name, set by ``optimize()`` (a layer's ``tune``) or by hand;
    an input without an entry runs the layer's default kernel. Plain data: copies, pickles and
    ``torch.save(model)`` keep it, so a reloaded model runs the kernels its report lists."""

    def for_input(self, x: torch.Tensor, default):
        return self.get(input_key(x), default)
