"""The package's import graph, read from the source (AST, every import at any depth): no cycles, no
module importing a higher layer, and no framework in the NumPy core."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src"
FRAMEWORKS = {"torch", "keras", "tensorflow", "jax", "torchvision", "timm", "safetensors"}
# lowest first; a module may import its own layer and the ones before it. `onebyone.torch` (the package's
# __init__) re-exports the fast path, so it sits with it; the front door (`import onebyone`, the CLI,
# the analyzer that picks a framework) sits on top.
LAYERS = [
    ("core", ["errors", "checks", "activations", "ops", "layout", "forms", "cost", "algebra", "chain_plan", "stats",
              "reparam", "quant"]),
    ("data", ["data"]),
    ("pages", ["plots", "webpage", "model_page", "tour", "notebook"]),
    ("adapters", ["torch", "keras"]),
    ("fast path", ["torch.fast", "=torch"]),  # "=": that module alone, not its submodules
    ("models and training", ["zoo", "train", "checkpoint", "progress", "runs"]),
    ("benchmark", ["bench"]),
    ("front door", ["=", "cli", "__main__", "analyzer", "extras"]),
]
NUMPY_ONLY = {"core", "data", "pages"}
# the one optional use: the `params` lesson cross-checks its count against Keras's count_params() when
# Keras is installed (inside the lesson, after find_spec), and says so when it is not
OPTIONAL_REFERENCE = {"onebyone.tour.lessons_basics": {"keras"}}
# a result's view in Jupyter: `_repr_html_` imports onebyone.notebook (the pages' table and figure) when a
# notebook displays the result, and nothing else does; that one import is not counted as a dependency
DISPLAY_HOOK = "_repr_html_"


def modules() -> dict:
    """Module name -> path, for every module of the package (a package is its __init__)."""
    out = {}
    for path in (ROOT / "onebyone").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> set:
    """Every module this one imports (its own package's modules by name, others by top-level name)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    tree = ast.parse(path.read_text())
    hooks = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == DISPLAY_HOOK
             for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in hooks and isinstance(node, ast.ImportFrom) and node.module == "notebook":
            continue  # Jupyter's view, imported when a notebook asks for it: no dependency of the module
        if isinstance(node, ast.Import):
            found |= {a.name if a.name in known else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            if mod not in known:
                found.add(mod.split(".")[0])
                continue
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
            found |= subs if len(subs) == len(node.names) else subs | {mod}
    return found


def layer_of(name: str) -> str:
    """The layer of a module: its longest matching prefix in LAYERS."""
    rel = name.removeprefix("onebyone").removeprefix(".")
    hits = [(len(p), layer) for layer, prefixes in LAYERS for p in prefixes
            if (rel == p[1:] if p.startswith("=") else rel == p or rel.startswith(p + "."))]
    assert hits, f"{name} is in no layer: add it to LAYERS"
    return max(hits)[1]


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_the_graph_is_read():
    assert "onebyone.torch.layers" in GRAPH["onebyone.torch.rewrites"]
    assert "torch" in GRAPH["onebyone.torch.layers"] and "numpy" in GRAPH["onebyone.ops"]
    assert GRAPH["onebyone.torch.fast.chain"] >= {"onebyone.chain_plan", "onebyone.torch.fast.private"}


def test_no_import_cycles():
    inner = {k: {v for v in vs if v in GRAPH} for k, vs in GRAPH.items()}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(inner[n]):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(inner):
        if n not in state:
            visit(n)
    assert cycles == []


def test_no_module_imports_a_higher_layer():
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    upward = [(a, b) for a, deps in GRAPH.items() for b in deps
              if b in GRAPH and rank[layer_of(b)] > rank[layer_of(a)]]
    assert upward == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if layer_of(n) in NUMPY_ONLY))
def test_the_numpy_core_imports_no_framework(name):
    used = GRAPH[name] & FRAMEWORKS - OPTIONAL_REFERENCE.get(name, set())
    assert not used, f"{name} imports {used}"


LONG_FUNCTIONS: dict = {}  # (module, function): why it may exceed the limit


def test_no_function_is_longer_than_60_lines():
    import ast

    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                if (name, node.name) not in LONG_FUNCTIONS:
                    long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []


CHECKS = ("assert", "raises", "warns", "opcheck", "fail")  # what a call that checks something is named


def test_every_test_checks_something():
    """A test with no ``assert``, ``pytest.raises`` / ``warns`` or checking call (``assert_close``, torch's
    ``opcheck``), in itself or in a helper of its file it calls, cannot fail: none is allowed."""
    import ast

    empty = []
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}

        def checks(fn, seen=()) -> bool:
            for n in ast.walk(fn):
                if isinstance(n, ast.Assert):
                    return True
                name = ast.unparse(n.func) if isinstance(n, ast.Call) else ""
                if any(c in name.lower() for c in CHECKS) or (
                        name in funcs and name not in seen and checks(funcs[name], (*seen, name))):
                    return True
            return False

        empty += [f"{path.name}:{f.lineno} {name}" for name, f in funcs.items()
                  if name.startswith("test_") and not checks(f)]
    assert empty == []


PER_LAYER = ["chain", "convact", "pool", "packed", "private"]  # fast/: the per-layer routines (kernels)
WHOLE_MODEL = ["engine", "exported", "onnx_runtime", "openvino", "compiled"]  # fast/: runtimes (engines)


def test_kernel_and_engine_each_mean_one_thing():
    """A kernel is a per-layer routine a fast layer runs; an engine runs a whole model (onnxruntime, OpenVINO,
    Inductor). The per-layer files never say engine (but for torch's ``torch.backends.quantized.engine``, its
    name for a library of int8 kernels); the engines' files say kernel only of the engines' own."""
    import re

    fast = Path(modules()["onebyone.torch.fast"]).parent
    for name in PER_LAYER:
        text = (fast / f"{name}.py").read_text().replace("torch.backends.quantized.engine", "")
        assert not re.findall(r"(?i)engine", text), name
    for name in WHOLE_MODEL:
        said = re.findall(r"(?i).{0,30}\bkernels?\b", (fast / f"{name}.py").read_text())
        assert all(re.search(r"(?i)engines'|inductor|generates", s) for s in said), (name, said)


def test_the_cli_only_parses_and_prints():
    """Policy lives where Python reaches it too (``runs``, ``analyzer``, ``bench``, ``extras``): cli.py stays short."""
    assert len((ROOT / "onebyone" / "cli.py").read_text().splitlines()) < 250


WATCHING = r"register_forward(_pre)?_hook|symbolic_trace|fx\.Tracer|\(TorchFunctionMode\)|ShapeProp"


def test_only_the_capture_module_watches_a_model():
    """Hooks, torch-function modes and torch.fx tracing live in ``onebyone.torch.capture``: the analyzer, the
    rewrites and optimize read models through it."""
    import re

    watchers = sorted(n for n, p in modules().items() if re.search(WATCHING, Path(p).read_text()))
    assert watchers == ["onebyone.torch.capture"]
    readers = {"onebyone.torch.collect", "onebyone.torch.record", "onebyone.torch.rewrites",
               "onebyone.torch.branches", "onebyone.torch.factorize", "onebyone.torch.norms",
               "onebyone.torch.fast.passes"}
    assert all("onebyone.torch.capture" in GRAPH[r] for r in readers)


MARKUP = (r"<(!DOCTYPE|/?[a-zA-Z][a-zA-Z0-9-]*)[\s>/]"  # an HTML tag
          r"|\bfunction\b\s*\w*\s*\(|\b(const|let|var)\s+\w+\s*=|=>|\bdocument\.|\bwindow\."  # JavaScript
          r"|[\w.#:-]+\s*\{[^{}]*:[^{}]*;[^{}]*\}")  # a CSS rule


def test_no_page_markup_in_python_strings():
    """HTML, JavaScript and CSS longer than 10 lines live in files (package data: ``templates/``), never in a
    Python string: a string constant, or an f-string with what it holds, spanning more than 10 lines, with 3 or
    more tags, script statements or style rules in its text, is refused in every module of the package."""
    import re

    found = []
    for name, path in modules().items():
        tree = ast.parse(Path(path).read_text())
        parts = {id(v) for f in ast.walk(tree) if isinstance(f, ast.JoinedStr) for v in ast.walk(f) if v is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and id(node) not in parts:
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
                text = node.value
            else:
                continue
            lines = max(node.end_lineno - node.lineno + 1, text.count("\n") + 1)
            if lines > 10 and len(re.findall(MARKUP, text)) >= 3:
                found.append(f"{name}:{node.lineno}: {lines} lines")
    assert found == []


def test_every_lesson_declares_its_figure_and_experiment_on_its_spec():
    """One registry, ``core.REGISTRY``: every figure (``figure_tools.Figure``) and experiment
    (``experiments.Experiment``) the tour's modules define is declared by exactly one lesson's spec, an
    experiment by the lesson it is named after and with its page files; the tour's page reads them from the
    specs, naming no lesson, and neither it nor the notebook imports a figures module or keeps a table of them."""
    import importlib

    from onebyone.tour import core
    from onebyone.tour.experiments import Experiment
    from onebyone.tour.figure_tools import Figure
    from onebyone.webpage import template

    specs = list(core.REGISTRY)
    ids = {spec.id for spec in specs}
    assert specs and len(ids) == len(specs)
    assert all(isinstance(s.figure, (Figure, type(None))) and isinstance(s.experiment, (Experiment, type(None)))
               for s in specs)
    declared = [x for s in specs for x in (s.figure, s.experiment) if x is not None]
    defined = {id(v): v for name in modules() if name.startswith("onebyone.tour")
               for v in vars(importlib.import_module(name)).values() if isinstance(v, (Figure, Experiment))}
    assert len({id(x) for x in declared}) == len(declared) and {id(x) for x in declared} == set(defined)
    tried = {s.id for s in specs if s.experiment is not None}
    assert all(s.experiment.name == s.id for s in specs if s.experiment is not None)
    assert all(template(f"experiments/{i}.{ext}", "onebyone.tour") for i in tried for ext in ("html", "js"))
    files = (ROOT / "onebyone" / "tour" / "templates" / "experiments").iterdir()
    assert {f.stem for f in files} == tried  # no experiment's files without its lesson
    tree = ast.parse(modules()["onebyone.tour.tour_page"].read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)} & ids
    assert named == set(), f"the tour's page names lessons {named}: it reads what a lesson shows from its spec"
    for name in ("onebyone.tour.tour_page", "onebyone.notebook"):
        tree = ast.parse(modules()[name].read_text())
        tables = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
                  if isinstance(t, ast.Name) and t.id in ("FIGURES", "EXPERIMENTS")}
        assert not tables and not {m for m in GRAPH[name] if m.startswith("onebyone.tour.figures_")}, name
