"""Every command in the README's shell blocks names a script that exists and flags that its --help lists."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# runpy warns when it re-runs an already imported module as __main__; here that is what we want (only --help runs).
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")
DOCS = [REPO / "README.md", REPO / "slurm" / "README.md"]
# Flags a script hands on to another one: compare_strategies passes unknown flags to run_boshnas.
PASSED_ON = {"flexibert.compare_strategies": "flexibert.run_boshnas"}


def shell_commands(path: Path) -> list[str]:
    """Commands of the ```shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```(?:shell|bash)\n(.*?)```", path.read_text(), flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def script_of(command: str) -> tuple[str, list[str]] | None:
    """(module, arguments) of a FlexiBERT Python entry point, or None for other commands (cd, sbatch, ...)."""
    words = shlex.split(command)
    if words[:3] == ["bash", "env_step.sh", "demo"]:
        return "flexibert.demo", words[3:]
    if words and words[0] == "torchrun":  # torchrun --nproc_per_node N SCRIPT ARGS: check SCRIPT's flags
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        words = ["python", *words[script:]]
    if not words or words[0] not in ("python", "python3"):
        return None
    if words[1] == "-m":
        return words[2], words[3:]
    if words[1].endswith(".py"):
        return words[1][:-3].replace("/", "."), words[2:]
    return None


def help_text(module: str) -> str:
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
            if module.startswith("benchmarks."):
                runpy.run_path(str(REPO / (module.replace(".", "/") + ".py")), run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
    assert stopped.value.code in (0, None), f"{module} --help failed"
    return out.getvalue()


def readme_scripts() -> dict[str, set[str]]:
    """{module: flags used with it anywhere in the docs}."""
    found: dict[str, set[str]] = {}
    for doc in DOCS:
        if not doc.is_file():
            continue
        for command in shell_commands(doc):
            parsed = script_of(command)
            if parsed is not None:
                module, arguments = parsed
                found.setdefault(module, set()).update(a.split("=")[0] for a in arguments if a.startswith("--"))
    return found


SCRIPTS = readme_scripts()


def test_the_readme_shows_the_pipeline_commands():
    for module in ("flexibert.demo", "embeddings.generate_library", "flexibert.run_boshnas", "flexibert.hierarchical",
                   "flexibert.compare_strategies", "flexibert.pretrain_flexibert", "flexibert.glue_score"):
        assert module in SCRIPTS, f"the README shows no command of {module}"


@pytest.mark.parametrize("module", sorted(SCRIPTS))
def test_every_readme_flag_exists(module):
    text = help_text(module)
    if module in PASSED_ON:
        text += help_text(PASSED_ON[module])
    listed = set(re.findall(r"--[\w-]+", text))
    # argparse accepts an unambiguous prefix (the original's README spells --design_space for --design_space_file)
    missing = sorted(flag for flag in SCRIPTS[module] if flag not in listed and len([f for f in listed if f.startswith(flag)]) != 1)
    assert not missing, f"{module} --help does not list {missing}, which the README uses"
