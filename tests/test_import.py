import subprocess
import sys


def test_import_onebyone_loads_numpy_only():
    code = ("import sys, onebyone, onebyone.tour, onebyone.cli; "
            "heavy = [m for m in ('torch', 'keras', 'matplotlib', 'tensorflow', 'jax') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import onebyone pulled in: {out.stdout.strip()}"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "onebyone", "lessons"], capture_output=True, text=True, check=True)
    assert "bottleneck" in out.stdout and "fc-as-conv" in out.stdout


def test_the_torch_adapters_load_only_when_asked():
    code = "import sys, onebyone; print('onebyone.torch' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_analyze_imports_no_framework_it_does_not_need():
    code = ("import sys, onebyone\n"
            "try:\n    onebyone.analyze(object())\nexcept onebyone.OneByOneError as e:\n    print('error:', e)\n"
            "print('torch' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["error: expected a torch.nn.Module or a keras.Model, got object", "False False"]
