"""Which optional extra each command needs, checked before any work: a partial install is told what to add."""
from __future__ import annotations

import importlib.util

from .errors import OneByOneError

# command -> the modules it imports; a figure (--html, --png) needs matplotlib too
NEEDS = {"summary": ("torch",), "report": ("torch", "matplotlib"), "train": ("torch", "safetensors", "sklearn", "PIL"),
         "maps": ("torch", "safetensors", "matplotlib", "PIL"), "bench": ("torch", "rich")}
EXTRA = {"torch": "torch", "safetensors": "torch", "rich": "torch", "sklearn": "data", "PIL": "data",
         "matplotlib": "data"}  # module -> the extra that brings it


def missing(command: str, figures: bool = False) -> list:
    """The modules ``command`` needs that are not installed here."""
    need = [*NEEDS.get(command, ()), *(("matplotlib",) if figures else ())]
    return [m for m in dict.fromkeys(need) if importlib.util.find_spec(m) is None]


def check_installed(command: str, figures: bool = False) -> None:
    """A OneByOneError naming the missing modules and the ``pip install 'onebyone[...]'`` that brings them."""
    gone = missing(command, figures)
    if gone:
        extras = ",".join(dict.fromkeys(EXTRA[m] for m in gone))
        raise OneByOneError(f"`onebyone {command}` needs {', '.join(gone)}, not installed here: "
                            f"pip install 'onebyone[{extras}]'")
