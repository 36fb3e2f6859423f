"""Every command of the README runs, as a newcomer would type it, without touching a tracked file.

The ``bash`` blocks run in a fresh temporary folder (paths of the repository made absolute), with the
long ones shortened (``--n`` to a few images) and every ``--out`` inside the temporary folder; the
``python`` block runs there after the demo, on the checkpoint folder the demo wrote. The pip install
steps are the test environment's own set-up and the test command would run this suite again, so those
two are the only parts not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SMALL_N = "8"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#", 1)[0].strip()
            if command:
                commands.append(command)
    return commands


def _runnable(command: str) -> list[str] | None:
    """The words to run for ``command`` (``None``: the set-up / test command itself)."""
    parts = [part.strip() for part in command.split("&&")]
    parts = [part for part in parts if not part.startswith("pip install")]
    if not parts or parts == ["python -m pytest -q"]:
        return None
    (part,) = parts
    return shlex.split(part)


def _rewrite(words: list[str], tmp: Path) -> list[str]:
    out = []
    for index, word in enumerate(words):
        previous = words[index - 1] if index else ""
        if previous == "--n":
            word = SMALL_N
        elif previous == "--out":
            word = str(tmp / word)
        elif (ROOT / word).exists() and not word.startswith("-") and "/" in word:
            word = str(ROOT / word)
        out.append(word)
    return out


def _tracked_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_the_two_commands():
    commands = _commands()
    assert commands[0] == 'pip install -e ".[demo]" && hf-iia demo'
    assert commands[1] == 'pip install -e ".[test]" && python -m pytest -q'
    assert (ROOT / ".ci" / "run").read_text().count('pip install -e ".[test]" && python -m pytest -q') == 1


@pytest.mark.parametrize("command", [c for c in _commands() if _runnable(c) is not None])
def test_every_readme_command_runs_without_touching_tracked_files(command, workdir):
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to tell tracked files")
    before = _tracked_state()
    words = _rewrite(_runnable(command), workdir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if words[0] == "accelerate":  # on a CPU-only machine the two processes join over gloo
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    result = subprocess.run(words, cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _tracked_state() == before, "a README command modified tracked files"


def test_the_python_examples_run(workdir):
    """The three-line example on the folder the demo wrote; the dataset example from the repository root."""
    if not (workdir / "hf-iia-demo" / "efficientnet_lite0").is_dir():
        subprocess.run(["hf-iia", "demo", "--steps", "1"], cwd=workdir, check=True, capture_output=True)
    first, *others = _blocks("python")
    result = subprocess.run([sys.executable, "-c", first], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tabby" in result.stdout and (workdir / "chelsea_iia.png").exists()
    for block in others:
        result = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name", ["add_a_method", "add_a_metric"])
def test_the_extension_examples_are_the_tested_files(name):
    """The README's "Add a method" / "Add a metric" blocks are, character for character, the example files the
    registry tests run."""
    assert (ROOT / "tests" / "examples" / f"{name}.py").read_text() in _blocks("python")
