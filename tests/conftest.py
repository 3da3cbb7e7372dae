import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from tests.pt import ecosystem  # noqa: E402 - before anything imports torchvision (transformers and timm do)

ecosystem.define_schemas()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("onebyone", deadline=None, max_examples=60, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("onebyone")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whichever tests ran before it in its process (the suite runs
    in several, in an order that varies): a test that draws without a seed of its own draws the same every run."""
    import random

    import torch

    random.seed(0), np.random.seed(0), torch.manual_seed(0)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite the golden files from the current output")


@pytest.fixture
def golden(request):
    """compare(text, name): the text must equal tests/golden/<name>; --update-golden rewrites it."""
    from pathlib import Path

    def compare(text, name):
        path = Path(__file__).parent / "golden" / name
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"no golden file {path}: run pytest --update-golden"
        assert text == path.read_text(), f"{name} changed; if intended, run pytest --update-golden"

    return compare


@pytest.fixture(scope="session")
def tour_lessons():
    """Every lesson, run once for the session (the tour and page tests share it)."""
    from onebyone.tour import run_tour

    return run_tour()


@pytest.fixture(scope="session")
def tour_page(tour_lessons, tmp_path_factory):
    """The tour written as HTML once for the session: the path of its index.html."""
    from onebyone.tour.tour_page import write_tour

    return write_tour(tour_lessons, tmp_path_factory.mktemp("tour") / "html")
