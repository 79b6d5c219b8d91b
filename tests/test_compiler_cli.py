"""`tapeout compile` from the command line: a factory module, a catalog model, and a machine
without torch."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # an installation without the torch extra
    from tapeout.cli import main
    sys.argv = ["tapeout", "compile", "--model", "llama-3.1-8b", "--target", "tapeout-i1"]
    main()
    """
)


CLI = "import sys; from tapeout.cli import main; sys.argv = ['tapeout', *sys.argv[1:]]; main()"


def _run(args, cwd=None, code=None):
    cmd = [sys.executable, "-c", code or CLI, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_without_torch_the_command_says_how_to_install_it():
    done = _run([], code=WITHOUT_TORCH)
    assert done.returncode == 2
    assert "pip install 'tapeout[torch]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_factory_module_compiles_and_writes_its_program(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "mlp.py").write_text(
        textwrap.dedent(
            """
            import torch

            def build():
                net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
                return net, (torch.randn(64, 256),)
            """
        )
    )
    out = tmp_path / "mlp.program.json"
    done = _run(["compile", "mlp:build", "--target", "h100-sxm", "--out", str(out), "--json"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["estimate"]["flops"] == pytest.approx(2 * 64 * 256 * 512 * 2, rel=0.01)
    assert result["estimate"]["kernels"] == 2  # the GELU fused into the first product
    assert json.loads(out.read_text())["schema"] == "tapeout-program/1"


def test_bad_factories_and_targets_are_refused_by_name(tmp_path):
    pytest.importorskip("torch")
    done = _run(["compile", "nosuch:build"], cwd=tmp_path)
    assert done.returncode == 2 and "field 'factory'" in done.stderr and "nosuch" in done.stderr
    done = _run(["compile", "--model", "llama-3.1-8b", "--layers", "1", "--target", "h9000"], cwd=tmp_path)
    assert done.returncode == 2 and "h9000" in done.stderr
