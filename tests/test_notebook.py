"""The notebook in docs/ runs top to bottom, and what onebyone returns renders itself in it."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples.ipynb"


def test_the_docs_notebook_runs_and_its_results_render_as_html():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})]
    assert len(html) == 4  # the analysis, two rewrite reports and a lesson
    stats, convolutionalized, reparameterized, lesson = html
    assert "MobileNet" in stats and "data:image/png;base64," in stats and "<table>" in stats
    assert "convolutionalize" in convolutionalized and "reparameterize" in reparameterized
    assert "changed" in reparameterized and "PASS" in lesson and "data:image/png;base64," in lesson
    assert "<script" not in "".join(html)  # read without JavaScript
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


def test_a_rewrite_report_names_the_sample_its_costs_were_counted_on():
    """Without an input, a rewrite guesses one (16 x 16 for nin_digits, whose digits are 8 x 8): its report read
    4x the MACs `onebyone summary` gives, with nothing saying why. The sample's shape now goes with them."""
    pytest.importorskip("torch")
    from onebyone import analyze
    from onebyone.torch import fold_batchnorm
    from onebyone.zoo import create_model

    model = create_model("nin_digits").eval()
    _, guessed = fold_batchnorm(model)
    _, given = fold_batchnorm(model, input_size=(1, 8, 8))
    macs = analyze(model, input_size=(1, 8, 8)).macs  # what `onebyone summary nin_digits` gives
    assert given.macs_before == macs and guessed.macs_before == 4 * macs
    assert f"MACs {macs:,} -> {given.macs_after:,} per sample of (1, 8, 8)" in str(given)
    assert "per sample of (1, 16, 16)" in str(guessed) and "per sample of (1, 16, 16)" in guessed._repr_html_()
