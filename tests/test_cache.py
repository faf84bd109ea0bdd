"""The result cache: unchanged sources are not analyzed again, changed inputs always are, and no
entry that gradcheck did not write with its own key is ever believed (DESIGN "The cache")."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gradcheck.cache import ResultCache, codec, keys
from gradcheck.cache.store import CacheUnavailable, EntryStore, load_secret
from gradcheck.cli import app
from gradcheck.options import Options
from gradcheck.report import ExitCode, ModelReport, SourceError, Status

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
_PROGRESS = re.compile(r"^gradcheck: \[\d+/\d+\] (.+?): .* \((cached|\d+\.\d s)\)$", re.M)

HELPERS = "WIDTH = 4\n"
FACTORY = '''import keras
from helpers import WIDTH


def build():
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(WIDTH, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="with_helper")
'''
OTHER = '''import keras


def build():
    inputs = keras.Input((3,), name="x")
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs), name="alone")
'''
SOURCES = ["clean.keras", "two_heads.keras", "unused_weight.keras", "factory.py:build",
           "other.py:build"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Three model files (one needs --custom-objects layers.py), a factory that imports a helper,
    and a factory that imports nothing of the user's; the working directory."""
    for name in ("clean.keras", "two_heads.keras", "unused_weight.keras"):
        shutil.copy2(SAMPLES / name, tmp_path / name)
    shutil.copy2(SAMPLES / "custom_layers.py", tmp_path / "layers.py")
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "factory.py").write_text(FACTORY)
    (tmp_path / "other.py").write_text(OTHER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(capsys, *args: str) -> tuple[int, str, set[str], set[str]]:
    """Run gradcheck in this process: (exit code, stdout, sources analyzed, sources cached)."""
    code = app(list(args), standalone_mode=False)
    out, err = capsys.readouterr()
    done = _PROGRESS.findall(err)
    return (code, out, {s for s, took in done if took != "cached"},
            {s for s, took in done if took == "cached"})


def _entries(cache_root: Path) -> dict[str, Path]:
    """source -> its entry file, read as plain JSON (never pickle)."""
    found = {}
    for path in cache_root.glob("gradcheck/v*/*/*.json"):
        found[json.loads(path.read_text())["source"]] = path
    return found


# --- a second run, and exactly what a change re-analyzes ------------------------------------


def test_changing_an_input_reanalyzes_exactly_the_sources_that_read_it(project, capsys):
    args = ("-v", "--custom-objects", "layers.py", "--", *SOURCES)
    code, first, analyzed, cached = _run(capsys, *args)
    assert (code, analyzed, cached) == (ExitCode.FINDINGS, set(SOURCES), set())

    code, again, analyzed, cached = _run(capsys, *args)
    assert (code, analyzed, cached) == (ExitCode.FINDINGS, set(), set(SOURCES))
    assert again == first  # a cached report is byte for byte the analyzed one

    shutil.copy2(SAMPLES / "frozen_encoder.keras", project / "clean.keras")  # the model's bytes
    code, out, analyzed, _ = _run(capsys, *args)
    assert analyzed == {"clean.keras"}
    assert "clean.keras: model 'frozen_encoder'" in out  # the new file's verdict, not the old

    (project / "helpers.py").write_text("WIDTH = 5\n")  # what factory.py imports
    code, out, analyzed, _ = _run(capsys, *args)
    assert analyzed == {"factory.py:build"}
    assert "hidden/kernel  (3, 5)" in out

    with open(project / "layers.py", "a") as handle:  # --custom-objects: imported for every source
        handle.write("\n# touched\n")
    code, out, analyzed, _ = _run(capsys, *args)
    assert analyzed == set(SOURCES)

    code, out, analyzed, cached = _run(capsys, *args)
    assert (analyzed, cached) == (set(), set(SOURCES))


def test_an_option_that_changes_verdicts_reanalyzes_and_the_old_entries_stay(project, capsys):
    sources = ("two_heads.keras", "other.py:build")
    assert _run(capsys, *sources)[2] == set(sources)
    assert _run(capsys, "--seed", "1", *sources)[2] == set(sources)
    assert _run(capsys, "--seed", "1", *sources)[3] == set(sources)
    assert _run(capsys, *sources)[3] == set(sources)  # seed 0's entries are still there
    # options of the gate and the output are applied after the cache: no analysis
    assert _run(capsys, "--fail-on", "unconnected,zero", "-f", "json", *sources)[3] == set(sources)


def test_another_installed_version_reanalyzes_every_source(project, capsys, monkeypatch):
    sources = ("two_heads.keras", "other.py:build")
    assert _run(capsys, *sources)[2] == set(sources)
    site = project / "site"
    (site / "keras-99.0.0.dist-info").mkdir(parents=True)
    (site / "keras-99.0.0.dist-info" / "METADATA").write_text("Name: keras\nVersion: 99.0.0\n")
    monkeypatch.syspath_prepend(str(site))
    assert keys.environment()["versions"]["keras"] == "99.0.0"
    assert _run(capsys, *sources)[2] == set(sources)


def test_no_cache_and_cache_dir(project, capsys, tmp_path_factory):
    assert _run(capsys, "--no-cache", "two_heads.keras")[2] == {"two_heads.keras"}
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "gradcheck").exists()  # nothing written
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert _run(capsys, "--cache-dir", str(elsewhere), "two_heads.keras")[2] == {"two_heads.keras"}
    assert _run(capsys, "--cache-dir", str(elsewhere), "two_heads.keras")[3] == {"two_heads.keras"}
    assert list(elsewhere.glob("v*/*/*.json"))
    (project / "pyproject.toml").write_text("[tool.gradcheck]\nno-cache = true\n")
    assert _run(capsys, "--cache-dir", str(elsewhere), "two_heads.keras")[2] == {"two_heads.keras"}


# --- never trusted more than the files it describes -------------------------------------------


def _forged(payload: dict) -> dict:
    """The entry's report with every variable connected: a failing model turned into a pass."""
    report = codec.decode_model(payload["report"])
    connected = tuple(replace(v, none=False, zero=False, status=Status.CONNECTED, cause=None)
                      for v in report.variables)
    return {**payload, "report": codec.encode(replace(report, variables=connected))}


def test_a_forged_entry_cannot_turn_a_failing_model_into_a_pass(project, capsys):
    assert _run(capsys, "two_heads.keras")[0] == ExitCode.FINDINGS
    cache_root = Path(os.environ["XDG_CACHE_HOME"])
    path = _entries(cache_root)["two_heads.keras"]
    key = path.stem
    entry = json.loads(path.read_text())
    payload = {k: v for k, v in entry.items() if k not in ("mac", "key")}
    store_dir = path.parents[2]

    # signed with a key of the attacker's own: ignored, the model is analyzed and still fails
    EntryStore(store_dir, b"an attacker's own key, not ours").write(key, _forged(payload))
    code, _, analyzed, _ = _run(capsys, "two_heads.keras")
    assert (code, analyzed) == (ExitCode.FINDINGS, {"two_heads.keras"})

    # the genuine entry with its report edited and the old MAC kept: ignored
    edited = {**entry, "report": _forged(payload)["report"]}
    path.write_text(json.dumps(edited))
    code, _, analyzed, _ = _run(capsys, "two_heads.keras")
    assert (code, analyzed) == (ExitCode.FINDINGS, {"two_heads.keras"})

    # a genuine entry of a clean model, copied under the failing model's key: ignored
    assert _run(capsys, "clean.keras")[0] == ExitCode.OK
    shutil.copy2(_entries(cache_root)["clean.keras"], path)
    code, _, analyzed, _ = _run(capsys, "two_heads.keras")
    assert (code, analyzed) == (ExitCode.FINDINGS, {"two_heads.keras"})

    # the control: the same forgery signed with the real key would be believed, so the key is
    # what stands between a pull request and a passing gate (and it is never in the repository)
    secret = (Path(os.environ["XDG_CONFIG_HOME"]) / "gradcheck" / "cache.key").read_bytes().strip()
    EntryStore(store_dir, secret).write(key, _forged(payload))
    code, _, _, cached = _run(capsys, "two_heads.keras")
    assert (code, cached) == (ExitCode.OK, {"two_heads.keras"})


def test_entries_are_json_with_their_reads_and_live_outside_the_repository(project, capsys):
    _run(capsys, "--custom-objects", "layers.py", "--", *SOURCES)
    cache_root = Path(os.environ["XDG_CACHE_HOME"])
    entries = _entries(cache_root)
    assert set(entries) == set(SOURCES)
    assert not list(project.rglob("*.json"))  # nothing in the working tree
    reads = {source: {Path(p).name for p, _ in json.loads(path.read_text())["reads"]}
             for source, path in entries.items()}
    assert reads["factory.py:build"] == {"factory.py", "helpers.py", "layers.py"}
    assert reads["other.py:build"] == {"other.py", "layers.py"}
    assert reads["clean.keras"] == {"layers.py"}  # its own bytes are in the lookup key


def test_a_fully_cached_run_starts_no_worker_and_imports_no_tensorflow(project):
    """In a fresh process, as in CI: and the analyzed code never sees the cache key."""
    (project / "peek.py").write_text(
        "import os\nimport keras\n\n\ndef build():\n"
        "    seen = 'seen' if os.environ.get('GRADCHECK_CACHE_KEY') else 'hidden'\n"
        "    inputs = keras.Input((3,), name='x')\n"
        "    return keras.Model(inputs, keras.layers.Dense(1)(inputs), name=f'key_{seen}')\n")
    env = {**os.environ, "GRADCHECK_CACHE_KEY": "a repository secret of 32 chars"}
    sources = ["two_heads.keras", "peek.py:build"]
    first = subprocess.run([sys.executable, "-m", "gradcheck", "-f", "json", *sources],
                           env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == ExitCode.FINDINGS, first.stderr
    assert [m["model_name"] for m in json.loads(first.stdout)["models"]] == ["two_heads",
                                                                             "key_hidden"]
    probe = (
        "import json, multiprocessing, sys\n"
        "from gradcheck.cli import app\n"
        f"code = app(['-f', 'json', *{sources!r}], standalone_mode=False)\n"
        "from gradcheck import runner\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'h5py'})\n"
        "sys.stderr.write(json.dumps({'code': code, 'heavy': heavy, 'workers': len(runner._pool.idle),"
        " 'children': len(multiprocessing.active_children())}) + '\\n')\n")
    second = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, timeout=120)
    facts = json.loads(second.stderr.strip().splitlines()[-1])
    assert facts == {"code": ExitCode.FINDINGS, "heavy": [], "workers": 0, "children": 0}
    assert second.stdout == first.stdout
    assert not (Path(os.environ["XDG_CONFIG_HOME"]) / "gradcheck" / "cache.key").exists()


# --- the pieces --------------------------------------------------------------------------------


def test_every_report_survives_the_entry_format(hand_models):
    for model in hand_models:
        data = json.loads(json.dumps(codec.encode(model)))
        assert codec.decode_model(data) == model
    with pytest.raises(ValueError):
        codec.decode_model({**codec.encode(hand_models[0]), "surprise": 1})
    with pytest.raises(ValueError):
        codec.decode_model({**codec.encode(hand_models[0]), "op_count": "57"})


@pytest.mark.parametrize("kind, stored", [("timeout", False), ("crashed", False),
                                           ("out-of-memory", False), ("too-large", False),
                                           ("import-failed", False), ("corrupt", True),
                                           ("forward-failed", True)])
def test_errors_of_the_machine_are_not_stored(tmp_path, monkeypatch, kind, stored):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.keras").write_bytes(b"not a model")
    store = EntryStore(tmp_path / "cache", b"k" * 32)
    cache = ResultCache(store, Options())
    assert cache.lookup("m.keras") is None
    report = ModelReport(source="m.keras", ok=False, error=SourceError(kind, "m.keras: …"))
    assert cache.add("m.keras", report, reads=()) is stored
    assert (cache.lookup("m.keras") == report) is stored


def test_the_key_file_is_made_once_readable_by_its_owner_only(tmp_path):
    key_file = tmp_path / "config" / "gradcheck" / "cache.key"
    where = {"key_file": key_file, "cache_dir": tmp_path / "cache", "repository": None}
    secret = load_secret({}, **where)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(secret) == 64
    assert load_secret({}, **where) == secret
    assert load_secret({"GRADCHECK_CACHE_KEY": "s" * 20}, **where) == b"s" * 20
    key_file.chmod(0o644)
    with pytest.raises(CacheUnavailable, match="may be read or written by other users"):
        load_secret({}, **where)
    with pytest.raises(CacheUnavailable, match="shorter than 16"):
        load_secret({"GRADCHECK_CACHE_KEY": "short"}, **where)
    with pytest.raises(CacheUnavailable, match="inside the cache directory"):
        load_secret({}, key_file=tmp_path / "cache" / "k", cache_dir=tmp_path / "cache",
                    repository=None)
    with pytest.raises(CacheUnavailable, match="inside the repository"):
        load_secret({}, key_file=tmp_path / "repo" / "k", cache_dir=tmp_path / "cache",
                    repository=tmp_path / "repo")


def test_without_a_usable_key_the_cache_is_off_and_says_so_once(project, capsys):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "gradcheck"
    config.mkdir(parents=True)
    (config / "cache.key").write_text("x" * 64)
    (config / "cache.key").chmod(0o666)
    code = app(["two_heads.keras"], standalone_mode=False)
    err = capsys.readouterr().err
    assert code == ExitCode.FINDINGS
    assert err.count("gradcheck: warning: the result cache is off: the cache key ") == 1
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "gradcheck").exists()


def test_the_store_keeps_under_its_bound_dropping_the_least_recently_used(tmp_path):
    store = EntryStore(tmp_path, b"k" * 32)
    for number in range(10):
        key = f"{number:02d}" * 32
        store.write(key, {"source": str(number), "blob": "x" * 1000})
        os.utime(store.path(key), (number, number))
    assert store.read("05" * 32) is not None  # read: now the most recently used
    size = store.path("00" * 32).stat().st_size
    assert store.evict(limit=size * 4) == 7
    left = sorted(p.stem[:2] for p in tmp_path.glob("v*/*/*.json"))
    assert left == ["05", "08", "09"]


def test_the_worker_records_the_users_imports_and_reads_not_the_librarys(tmp_path):
    """``SourceReads`` in a fresh interpreter (it forgets modules; not in pytest's process)."""
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "entry.py").write_text("import json\nimport helper\n")
    (tmp_path / "data.json").write_text("{}")
    (tmp_path / "model.keras").write_text("bytes")
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from gradcheck.cache.reads import SourceReads\n"
        "import entry\n"  # imported before: forgotten, so that this source imports its own
        f"with SourceReads(exclude={str(tmp_path / 'model.keras')!r}) as reads:\n"
        "    import entry, email.message\n"
        f"    open({str(tmp_path / 'data.json')!r}).read()\n"
        f"    open({str(tmp_path / 'model.keras')!r}).read()\n"
        f"    open({str(tmp_path / 'written.txt')!r}, 'w').write('x')\n"
        "print(json.dumps([p for p, _ in reads.digests()]))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    recorded = [Path(p).name for p in json.loads(run.stdout)]
    assert recorded == ["data.json", "entry.py", "helper.py"]
