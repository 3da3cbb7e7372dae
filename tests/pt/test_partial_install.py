"""A user who runs ``pip install onebyone`` or ``pip install 'onebyone[torch]'``, not ``make demo``: each
command, in a real virtual environment holding only what that install brings, stops before any work and
names the extra it needs (never a raw ModuleNotFoundError). The environments are built here without a
download: each installed distribution the install would bring is linked from this one."""
import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

import onebyone

pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402


def closure(extras: tuple) -> set:
    """The distributions ``pip install 'onebyone[extras]'`` installs, by the requirements this one declares."""
    todo, seen = [(r, extras) for r in metadata.requires("onebyone") or ()], set()
    while todo:
        text, wanted = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
            continue
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        todo += [(r, tuple(req.extras)) for r in metadata.requires(name) or ()]
    return seen


def environment(root: Path, extras: tuple) -> Path:
    """A venv at ``root`` with onebyone (this checkout's source) and exactly the distributions its ``extras``
    bring, linked from this environment; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    for name in closure(extras):
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(source)
    (site / "onebyone-source.pth").write_text(str(Path(onebyone.__file__).resolve().parents[1]) + "\n")
    return root / "bin" / "python"


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    root = tmp_path_factory.mktemp("installs")
    return {"base": environment(root / "base", ()), "torch": environment(root / "torch", ("torch",))}


CASES = [  # (install, command, the module it lacks, the extra named)
    ("base", ["summary", "mobilenet_v1"], "torch", "torch"),
    ("base", ["train", "nin_digits", "--data", "digits"], "torch", "torch"),
    ("base", ["bench", "--quick"], "torch", "torch"),
    ("torch", ["report", "mobilenet_v1", "--html", "r"], "matplotlib", "data"),
    ("torch", ["train", "nin_digits", "--data", "digits"], "sklearn", "data"),
    ("torch", ["maps", "run", "test:0"], "matplotlib", "data"),
    ("torch", ["tour", "--html", "t"], "matplotlib", "data"),
]


@pytest.mark.parametrize("install,args,missing,extra", CASES, ids=[f"{c[0]}: {c[1][0]}" for c in CASES])
def test_each_command_in_a_partial_install_names_the_extra_it_needs(envs, tmp_path, install, args, missing, extra):
    run = subprocess.run([str(envs[install]), "-m", "onebyone", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert re.search(f"needs .*{missing}.*pip install 'onebyone\\[{extra}", run.stderr), run.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_environments_hold_only_what_each_install_brings(envs):
    probe = "import importlib.util as u; print([m for m in ('numpy', 'torch', 'matplotlib') if u.find_spec(m)])"
    found = {k: subprocess.run([str(p), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
             for k, p in envs.items()}
    assert found == {"base": "['numpy']", "torch": "['numpy', 'torch']"}


def test_the_tour_in_the_base_install_runs_and_names_what_it_skipped(envs, tmp_path):
    run = subprocess.run([str(envs["base"]), "-m", "onebyone", "tour"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert re.search(r"check\(s\) skipped .*pip install 'onebyone\[", run.stdout), run.stdout[-2000:]
