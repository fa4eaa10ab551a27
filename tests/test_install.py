"""check_install.py and the README's Python examples, run as a user would."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_check_install_passes_on_a_working_install():
    result = subprocess.run([sys.executable, "check_install.py", "--skip_hub"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[ok]   torch " in result.stdout and "transformers " in result.stdout
    assert re.search(r"FlexiBERT-Mini MLM \([\d,]+ parameters\): forward\+backward", result.stdout)
    assert "SLURM sbatch:" in result.stdout and "Hugging Face hub: skipped" in result.stdout


def test_check_install_fails_when_the_core_is_broken(tmp_path):
    broken = tmp_path / "transformers"  # a dependency that fails to import, as after a bad upgrade
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('simulated broken install')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(ROOT / "check_install.py"), "--skip_hub"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "simulated broken install" in result.stderr and "[FAIL]" in result.stderr


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every README Python block that needs no download runs, in order, in one namespace."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    runnable = [b for b in blocks if "path/or/hub-name" not in b]
    assert len(runnable) >= 4
    shutil.copytree(ROOT / "design_space", tmp_path / "design_space")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "models" / "my_model" / "model.safetensors").exists()
    assert 0 < namespace["report"].scalar_fraction <= 1
    assert len(namespace["library"]) == 12 and (tmp_path / "dataset" / "dataset_tiny.json").exists()
