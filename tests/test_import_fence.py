import subprocess
import sys


def test_core_imports_without_optional_extras():
    """torch, ray and plotly stay out of the core: importing and running it never loads them."""
    code = (
        "import sys\n"
        "for name in ('torch', 'ray', 'plotly'): sys.modules[name] = None\n"
        "import tapeout.cli, tapeout.validate, tapeout.calibrate, tapeout.perf\n"
        "from tapeout.validate import run, PUBLIC_CASES\n"
        "run(PUBLIC_CASES)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
