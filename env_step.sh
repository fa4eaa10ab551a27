#!/usr/bin/env bash
# Set up FlexiBERT's Python environment (a local .venv), then optionally run a command in it.
#
#   bash env_step.sh              create/update .venv (quick when nothing changed)
#   bash env_step.sh test [ARGS]  ... then lint with ruff and run the test suite (pytest ARGS, two workers)
#   bash env_step.sh demo [ARGS]  ... then run the whole pipeline at tiny settings (python -m flexibert.demo ARGS)
#   source env_step.sh            ... and leave the environment activated in this shell
#
# Environment variables:
#   FLEXIBERT_VENV  where the environment lives (default: .venv beside this file)
#   TORCH_SPEC      the torch requirement installed first (default torch==2.13.0); on a CPU-only
#                   machine point pip at a CPU wheel index with PIP_EXTRA_INDEX_URL if needed
#   FLEXIBERT_TEST_WORKERS  pytest-xdist workers of `test` (default 2; 0: one process)
#   FLEXIBERT_CONDA=1  create/use a conda env "flexibert" instead of .venv when conda is present
set -euo pipefail
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_venv="${FLEXIBERT_VENV:-$_here/.venv}"
_torch="${TORCH_SPEC:-torch==2.13.0}"

_setup() {
  if [[ "${FLEXIBERT_CONDA:-0}" == 1 ]] && command -v conda >/dev/null; then
    conda env list | grep -q '^flexibert ' || conda create -y -n flexibert python=3.11
    _py="$(conda run -n flexibert which python)"
  else
    [[ -x "$_venv/bin/python" ]] || python3 -m venv "$_venv"
    _py="$_venv/bin/python"
  fi
  # Reinstall only when the requirements changed since the last successful setup.
  local stamp="$_venv/.flexibert-setup" want
  want="$(cat "$_here/requirements.txt" "$_here/pyproject.toml" | sha256sum | cut -d' ' -f1) $_torch"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$_py" -c "import flexibert" 2>/dev/null; then
    return 0
  fi
  echo "env_step: installing into $_venv (torch: $_torch)" >&2
  "$_py" -m pip install --quiet --upgrade pip
  "$_py" -c "import torch" 2>/dev/null || "$_py" -m pip install --quiet "$_torch"
  "$_py" -m pip install --quiet -e "$_here[dev]"
  mkdir -p "$_venv" && echo "$want" > "$stamp"
}

_setup
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: leave the environment active and do not exit the caller's shell.
  # shellcheck disable=SC1091
  [[ -f "$_venv/bin/activate" ]] && source "$_venv/bin/activate"
  set +euo pipefail
  return 0
fi
if [[ "${1:-}" == "test" ]]; then
  shift
  cd "$_here"
  "$_py" -m ruff check .
  # Two pytest-xdist workers, each taking whole test files: most of the suite's time is single-threaded (imports,
  # subprocesses, SLURM waits), and a file's module fixtures are then built once. The SLURM tests hold the one
  # local cluster one at a time (tests/slurm_cluster.py). FLEXIBERT_TEST_WORKERS=0 runs everything in one process.
  exec "$_py" -m pytest -n "${FLEXIBERT_TEST_WORKERS:-2}" --dist loadfile "$@"
fi
if [[ "${1:-}" == "demo" ]]; then
  shift
  cd "$_here"
  exec "$_py" -m flexibert.demo "$@"
fi
