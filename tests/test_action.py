"""The GitHub Action (``action.yml``): it validates against the Actions schema, every expression
in it refers to something that exists, and its steps run here with GitHub's environment faked.

``data/github-action.schema.json`` is SchemaStore's schema for action metadata
(``src/schemas/json/github-action.json``, Apache-2.0), vendored so the test needs no network.
The runner below does what GitHub's does for a composite action, for the subset of expressions
the action uses: it evaluates ``if:``, substitutes ``${{ }}`` in ``env:`` and ``with:``, runs
``bash`` steps as ``bash --noprofile --norc -eo pipefail {0}`` and ``python`` steps as
``python {0}``, reads ``$GITHUB_OUTPUT``, and hands ``uses:`` steps to the test.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck import __version__

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
SCHEMA = json.loads((Path(__file__).parent / "data" / "github-action.schema.json").read_text())
SAMPLES = ROOT / "sample_models"
#: The actions this one uses, at the major versions it pins, and the inputs each one declares.
USED_ACTIONS = {
    "actions/cache/restore@v5": {"path", "key", "restore-keys", "enableCrossOsArchive",
                                 "fail-on-cache-miss", "lookup-only"},
    "actions/cache/save@v5": {"path", "key", "upload-chunk-size", "enableCrossOsArchive"},
    "github/codeql-action/upload-sarif@v4": {"sarif_file", "checkout_path", "ref", "sha", "token",
                                             "matrix", "category", "wait-for-processing"},
}
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


# --- what GitHub checks before running it ------------------------------------------------------


def test_action_validates_against_the_actions_schema():
    validator = jsonschema.Draft7Validator(SCHEMA)
    assert list(validator.iter_errors(ACTION)) == []
    broken = copy.deepcopy(ACTION)
    del broken["runs"]["steps"][0]["shell"]  # a run step without its shell: the schema notices
    assert list(validator.iter_errors(broken))


def test_every_expression_names_an_input_or_an_earlier_steps_output():
    inputs = set(ACTION["inputs"])
    written: dict[str, str] = {}  # step id -> its script
    for step in ACTION["runs"]["steps"]:
        texts = [step.get("if", "")] + [str(v) for v in {**step.get("env", {}),
                                                           **step.get("with", {})}.values()]
        for text in texts:
            for name in re.findall(r"inputs\.([\w-]+)", text):
                assert name in inputs, name
            for step_id, output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", text):
                assert step_id in written, f"{step_id} runs later or not at all"
                assert f'"{output}' in written[step_id] or f"{output}=" in written[step_id]
        assert "${{" not in step.get("run", "")  # inputs reach scripts as variables, never as code
        if "uses" in step:
            assert set(step.get("with", {})) <= USED_ACTIONS[step["uses"]]
        if "id" in step:
            written[step["id"]] = step.get("run", "")
    for output in ACTION["outputs"].values():
        step_id, name = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}",
                                     output["value"]).groups()
        assert f"{name}=" in written[step_id]


# --- the steps, run here -----------------------------------------------------------------------


def _evaluate(expression: str, context: dict) -> str | bool:
    """GitHub's expression syntax, as far as the action uses it: contexts, '…', ==, !=, &&, ||."""
    def value(token: str):
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        found = context
        for part in token.split("."):
            found = found.get(part, "") if isinstance(found, dict) else ""
        return found

    def comparison(text: str):
        for operator in ("==", "!="):
            if operator in text:
                left, right = (value(side.strip()) for side in text.split(operator))
                return (str(left) == str(right)) == (operator == "==")
        return value(text.strip())

    if not re.search(r"==|!=|&&|\|\|", expression):
        return value(expression.strip())
    return any(all(comparison(term) for term in clause.split("&&"))
               for clause in expression.split("||"))


def _substitute(text: str, context: dict) -> str:
    return _EXPRESSION.sub(lambda m: str(_evaluate(m.group(1), context)), text)


def _outputs(path: Path) -> dict[str, str]:
    """``$GITHUB_OUTPUT``: ``name=value`` lines and ``name<<DELIMITER`` blocks."""
    outputs, lines = {}, iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def run_action(workspace: Path, runner: Path, inputs: dict[str, str]) -> dict:
    """Run ``action.yml``'s steps as GitHub would; what each step printed, did and output."""
    context = {"inputs": {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()},
               "steps": {}, "github": {"action_path": str(ROOT)}}
    context["inputs"].update(inputs)
    shims = runner / "bin"
    environment = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
                   "RUNNER_TEMP": str(runner / "temp"), "RUNNER_OS": "Linux",
                   "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1",
                   "GITHUB_STEP_SUMMARY": str(runner / "summary.md"),
                   "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_WORKSPACE": str(workspace),
                   "PIP_LOG": str(runner / "pip.log")}
    done: dict = {"uses": [], "printed": {}, "exit": 0}
    for number, step in enumerate(ACTION["runs"]["steps"]):
        if "if" in step and not _evaluate(step["if"], context):
            continue
        if "uses" in step:
            done["uses"].append((step["uses"], {k: _substitute(str(v), context)
                                                for k, v in step.get("with", {}).items()}))
            continue
        output = runner / f"output-{number}"
        output.write_text("")
        script = runner / f"step-{number}"
        script.write_text(step["run"])
        command = (["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
                   if step["shell"] == "bash" else ["python", str(script)])
        env = {**environment, **{k: _substitute(str(v), context)
                                 for k, v in step.get("env", {}).items()},
               "GITHUB_OUTPUT": str(output)}
        ran = subprocess.run(command, env=env, cwd=workspace, capture_output=True, text=True,
                             timeout=600, executable=shutil.which(command[0], path=env["PATH"]))
        done["printed"][step.get("id", step["name"])] = ran.stdout + ran.stderr
        if step.get("id"):
            context["steps"][step["id"]] = {"outputs": _outputs(output)}
        if ran.returncode != 0:
            done["exit"] = ran.returncode
            break
    done["outputs"] = {name: _substitute(spec["value"], context)
                       for name, spec in ACTION["outputs"].items()}
    return done


@pytest.fixture
def runner(tmp_path) -> Path:
    """The runner's folders, and a ``python`` on PATH that logs ``pip`` and runs the rest."""
    (tmp_path / "temp").mkdir()
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "python"
    shim.write_text('#!/bin/bash\nif [ "$1 $2" = "-m pip" ]; then echo "$@" >> "$PIP_LOG"; '
                    f'exit 0; fi\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    return tmp_path


def test_the_steps_gate_annotate_summarize_upload_and_cache(tmp_path, runner):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    for name in ("two_heads.keras", "clean.keras"):
        shutil.copy2(SAMPLES / name, workspace / name)
    inputs = {"sources": "two_heads.keras\nclean.keras", "cache-key": "a secret of the repository"}
    done = run_action(workspace, runner, inputs)

    assert (runner / "pip.log").read_text().split() == [
        "-m", "pip", "install", "--disable-pip-version-check", str(ROOT)]
    assert done["exit"] == 1 and done["outputs"]["exit-code"] == "1"  # the gate fails the job
    assert "::error file=two_heads.keras" in done["printed"]["run"]
    sarif_file = done["outputs"]["sarif-file"]
    results = json.loads(Path(sarif_file).read_text())["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"GC002"}
    assert "## gradcheck fails" in (runner / "summary.md").read_text()
    (restore, restored), (upload, uploaded), (save, saved) = done["uses"]
    assert (restore, upload, save) == ("actions/cache/restore@v5",
                                       "github/codeql-action/upload-sarif@v4",
                                       "actions/cache/save@v5")
    assert uploaded == {"sarif_file": sarif_file, "category": "gradcheck"}
    assert restored["path"] == saved["path"] == str(runner / "temp" / "gradcheck-cache")
    # the key: OS, Python and gradcheck, this job's sources and arguments, this run
    prefix = f"gradcheck-Linux-py{'.'.join(map(str, sys.version_info[:3]))}-{__version__}-"
    own = re.fullmatch(re.escape(prefix) + r"([0-9a-f]{16})-4242-1", saved["key"])
    assert own and restored["key"] == saved["key"]
    assert restored["restore-keys"].splitlines() == [f"{prefix}{own.group(1)}-", prefix]
    assert list((runner / "temp" / "gradcheck-cache").glob("v*/*/*.json"))

    # the next run of the job finds the restored cache: nothing is analyzed again
    (runner / "summary.md").unlink()
    again = run_action(workspace, runner, {**inputs, "install": "false"})
    assert again["exit"] == 1 and again["outputs"]["exit-code"] == "1"
    assert again["printed"]["run"].count("(cached)") == 2
    assert "## gradcheck fails" in (runner / "summary.md").read_text()


def test_globs_quoted_args_a_shard_and_everything_switched_off(tmp_path, runner):
    workspace = tmp_path / "workspace"
    (workspace / "models" / "deep").mkdir(parents=True)
    shutil.copy2(SAMPLES / "two_heads.keras", workspace / "models" / "deep" / "two_heads.keras")
    inputs = {"sources": "models/**/*.keras missing/*.keras", "shard": "1/1", "install": "false",
              "args": "--allow 'critic/*=trained by a second loss'", "upload-sarif": "false",
              "job-summary": "false"}
    done = run_action(workspace, runner, inputs)

    assert not (runner / "pip.log").exists() and not (runner / "summary.md").exists()
    assert done["uses"] == []  # no cache-key: no cache; no SARIF upload
    assert "no cache-key given: the result cache is off" in done["printed"]["prepare"]
    argv = shlex.split(done["printed"]["run"].splitlines()[0].removeprefix("gradcheck: "))
    assert argv[argv.index("--allow") + 1] == "critic/*=trained by a second loss"
    assert argv[argv.index("--shard") + 1] == "1/1" and "--no-cache" in argv
    assert argv[argv.index("--") + 1:] == ["models/deep/two_heads.keras", "missing/*.keras"]
    assert done["exit"] == 3 and done["outputs"]["exit-code"] == "3"  # missing/*.keras: no file
    assert "allowed: trained by a second loss" in json.dumps(json.loads(
        Path(done["outputs"]["sarif-file"]).read_text()))
