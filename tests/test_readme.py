import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_has_exactly_two_commands():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert len(commands) == 2


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    test_command = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[1].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci
