"""The pre-commit hook: the manifest passes pre-commit's own validator, and (slow) the real
``pre-commit`` installs this repository as a hook repo and fails a commit of a broken model."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / ".pre-commit-hooks.yaml"

clientlib = pytest.importorskip("pre_commit.clientlib")
yaml = pytest.importorskip("yaml")  # installed with pre-commit


# --- the manifest (fast) -------------------------------------------------------------------------


def test_manifest_passes_pre_commits_validator():
    from pre_commit.commands.validate_manifest import validate_manifest

    assert validate_manifest([str(MANIFEST)]) == 0


def test_manifest_declares_one_serial_hook_that_takes_file_names():
    (hook,) = clientlib.load_manifest(str(MANIFEST))
    assert (hook["id"], hook["entry"], hook["language"]) == ("gradcheck", "gradcheck", "python")
    assert hook["pass_filenames"] is True
    assert hook["require_serial"] is True  # one process, one TensorFlow import, for all files
    assert hook["args"][-1] == "--"  # file names after it: a file named "--config=x" is a file


def test_manifest_uses_only_keys_pre_commit_knows():
    known = {item.key for item in clientlib.MANIFEST_HOOK_DICT.items if hasattr(item, "key")}
    (raw,) = yaml.safe_load(MANIFEST.read_text())
    assert set(raw) <= known


@pytest.mark.parametrize("name, selected", [
    ("model.keras", True), ("models/legacy.h5", True), ("a/b/c.keras", True),
    ("model.keras.bak", False), ("train.py", False), ("weights.h5py", False), ("keras", False),
])
def test_files_pattern_selects_model_files(name, selected):
    (hook,) = clientlib.load_manifest(str(MANIFEST))
    assert bool(re.search(hook["files"], name)) is selected  # pre-commit uses re.search


def test_entry_is_the_installed_console_script():
    (hook,) = clientlib.load_manifest(str(MANIFEST))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert hook["entry"] in scripts


# --- the real pre-commit (slow: installs the hook's own virtualenv with TensorFlow) -------------

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "gradcheck tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "gradcheck tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory) -> tuple[Path, str]:
    """This working tree (committed or not) as a one-commit git repo: (path, commit)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("hook_repo")
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "snapshot of the working tree")
    return repo, _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="session")
def pre_commit_env(tmp_path_factory) -> dict[str, str]:
    """The environment for pre-commit: its cache (the hook's virtualenv) shared by this session."""
    home = tmp_path_factory.mktemp("pre_commit_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRE_COMMIT")}
    return {**env, **GIT_ENV, "PRE_COMMIT_HOME": str(home)}


@pytest.fixture
def project(tmp_path, hook_repo) -> Path:
    """A model repository whose .pre-commit-config.yaml uses the hook from ``hook_repo``."""
    repo_path, rev = hook_repo
    _git(tmp_path, "init", "-q")
    (tmp_path / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {repo_path}\n    rev: {rev}\n    hooks:\n      - id: gradcheck\n")
    _git(tmp_path, "add", ".pre-commit-config.yaml")
    return tmp_path


def _pre_commit(project: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def _add_model(project: Path, sample: str) -> str:
    shutil.copy2(ROOT / "sample_models" / sample, project / sample)
    _git(project, "add", sample)
    return sample


@pytest.mark.slow
def test_real_pre_commit_fails_on_a_model_with_an_unconnected_variable(project, pre_commit_env):
    model = _add_model(project, "two_heads.keras")
    run = _pre_commit(project, pre_commit_env, "run", "--files", model)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Failed" in output and "exit code: 1" in output
    assert "critic/kernel" in output and "detached" in output


@pytest.mark.slow
def test_real_pre_commit_passes_on_a_clean_model(project, pre_commit_env):
    model = _add_model(project, "clean.keras")
    run = _pre_commit(project, pre_commit_env, "run", "--files", model)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Passed" in run.stdout


@pytest.mark.slow
def test_installed_hook_refuses_the_commit(project, pre_commit_env):
    _pre_commit(project, pre_commit_env, "install")
    _add_model(project, "two_heads.keras")
    commit = subprocess.run(["git", "commit", "-m", "add a model"], cwd=project,
                            env=pre_commit_env, capture_output=True, text=True, timeout=900,
                            check=False)
    assert commit.returncode != 0
    assert "critic/kernel" in commit.stdout + commit.stderr
    with pytest.raises(subprocess.CalledProcessError):
        _git(project, "rev-parse", "HEAD")  # nothing was committed
