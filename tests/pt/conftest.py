import pytest

from .cpus import SETS, simulate


@pytest.fixture(params=list(SETS))
def cpu(request, monkeypatch):
    """Each simulated CPU in turn (see ``cpus.SETS``): the fast path's capability answers patched."""
    return simulate(monkeypatch, request.param)
