import subprocess
import sys


def test_core_imports_without_optional_extras():
    """torch, ray and plotly stay out of the core: importing and running it never loads them."""
    code = (
        "import sys\n"
        "for name in ('torch', 'ray', 'plotly'): sys.modules[name] = None\n"
        "import tapeout.cli, tapeout.validate, tapeout.calibrate, tapeout.perf, tapeout.api, tapeout.plan\n"
        "from tapeout.validate import PUBLIC_CASES, load_cases, predict\n"
        "cases = load_cases(PUBLIC_CASES)\n"
        "for kind in ('gemm', 'collective', 'llm_training', 'recsys_training'):\n"
        "    assert predict(next(c for c in cases if c.kind == kind)).predicted\n"
        "from tapeout.api import serve\n"
        "assert serve('llama-2-7b', 'h100-sxm', requests=16, input_len=64, output_len=8).tokens_per_s > 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
