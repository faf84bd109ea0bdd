"""gradcheck vs. the obvious hand-written check: ``make bench`` (``python benchmarks/bench.py``).

Builds its models into ``bench-out/`` on first use (ResNet50 ~100 MB, BERT-base ~440 MB; kept out
of git), then times, alternating in one run, each gradcheck command against its reference:

* ``gradcheck resnet50.keras`` / ``bert_base_tagger.keras`` vs ``benchmarks/hand_check.py`` on the
  same file (wall ratio <= 1.0, peak-RSS ratio <= 1.2);
* five small models in one call vs five separate calls (ratio <= 0.4);
* twelve keras.applications models (128x128) with ``-j 2`` vs ``-j 1``: faster (ratio < 1.0) and
  the same report, byte for byte;
* ``gradcheck --help`` / ``--version`` (<= 0.5 s, and TensorFlow is not imported);
* the result cache: a second run on 20 unchanged small models (<= 1 s in all, no TensorFlow
  imported), and a run after one of them changed (exactly that one is analyzed again);
* graph analysis (op-graph building + everything after the tape step) on generated deep models
  of ~5k and ~50k ops (time per op at 50k within 1.5x of 5k) and its share of ResNet50's wall
  time (< 10 %), measured in-process by ``benchmarks/phases.py``.

Every command is a fresh subprocess; wall time is ``time.perf_counter`` around it, peak RSS is the
child's ``ru_maxrss`` from ``os.wait4``.  ``--quick`` skips BERT and the 50k-op model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from models import SMALL, ZOO  # noqa: E402  (imports no TensorFlow)

PYTHON = sys.executable
GRADCHECK = str(Path(PYTHON).with_name("gradcheck"))
#: gradcheck as measured against the hand check: every run analyzes (the result cache, on when
#: the user has a cache key, is measured on its own by ``compare_cached``)
ANALYZE = [GRADCHECK, "--no-cache"]
HAND = str(HERE / "hand_check.py")

#: generated deep residual MLPs: about 8 forward ops per block
BLOCKS_5K, BLOCKS_50K = 620, 6200


@dataclass
class Run:
    wall: float
    rss_mb: float
    code: int
    stderr: str = ""
    cpu: float = 0.0  #: user + system seconds of the child (less sensitive to a busy machine)


@dataclass
class Row:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: informational
    notes: list[str] = field(default_factory=list)


def run(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> Run:
    """Run ``cmd`` with its output discarded; wall time and the child's own peak RSS."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                env={**os.environ, **(env or {})})
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Run(wall, usage.ru_maxrss / 1024, proc.returncode, text,
               usage.ru_utime + usage.ru_stime)


def check_code(result: Run, allowed: tuple[int, ...], what: str) -> None:
    if result.code not in allowed:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"bench: {what} exited with {result.code}:\n{tail}")


def alternate(commands: dict[str, list[list[str]]], rounds: int, allowed: tuple[int, ...],
              log) -> dict[str, list[Run]]:
    """Run each named sequence of commands once per round, alternating; a sequence's runs are summed."""
    results: dict[str, list[Run]] = {name: [] for name in commands}
    for r in range(rounds):
        for name, cmds in commands.items():
            runs = []
            for cmd in cmds:
                result = run(cmd)
                check_code(result, allowed, " ".join(cmd))
                runs.append(result)
            total = Run(sum(x.wall for x in runs), max(x.rss_mb for x in runs), 0,
                        cpu=sum(x.cpu for x in runs))
            results[name].append(total)
            log(f"  round {r + 1}: {name:<17} {total.wall:6.2f} s wall {total.cpu:6.2f} s CPU "
                f"{total.rss_mb:6.0f} MB  (load {os.getloadavg()[0]:.1f})")
    return results


def median_ratio(a: list[Run], b: list[Run], attr: str) -> float:
    return statistics.median(getattr(x, attr) / getattr(y, attr) for x, y in zip(a, b))


def med(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(x, attr) for x in runs)


def verdict(ok: bool | None) -> str:
    return "info" if ok is None else ("PASS" if ok else "FAIL")


def compare_big(name: str, path: Path, rounds: int, real_weights: bool, log
                ) -> tuple[list[Row], float]:
    """The rows for one big model, and gradcheck's median wall time on it."""
    log(f"{name}: gradcheck vs hand_check.py, {rounds} rounds")
    commands = {"hand": [[PYTHON, HAND, str(path)]], "gradcheck": [[*ANALYZE, str(path)]]}
    if real_weights:
        commands["gc --real-weights"] = [[*ANALYZE, "--real-weights", str(path)]]
    res = alternate(commands, rounds, (0, 1), log)
    hand, gc = res["hand"], res["gradcheck"]
    wall_ratio = median_ratio(gc, hand, "wall")
    rss_ratio = median_ratio(gc, hand, "rss_mb")
    rows = [
        Row(f"{name}: wall", f"gradcheck {med(gc, 'wall'):.2f} s / hand {med(hand, 'wall'):.2f} s"
            f" = {wall_ratio:.2f} (CPU time {median_ratio(gc, hand, 'cpu'):.2f})",
            "<= 1.0 (aim 0.8)", wall_ratio <= 1.0),
        Row(f"{name}: peak RSS", f"gradcheck {med(gc, 'rss_mb'):.0f} MB / hand "
            f"{med(hand, 'rss_mb'):.0f} MB = {rss_ratio:.2f}", "<= 1.2", rss_ratio <= 1.2),
    ]
    if real_weights:
        rw = res["gc --real-weights"]
        rows.append(Row(f"{name}: --real-weights", f"{med(rw, 'wall'):.2f} s, "
                        f"{med(rw, 'rss_mb'):.0f} MB; ratio {median_ratio(rw, hand, 'wall'):.2f} "
                        f"wall, {median_ratio(rw, hand, 'rss_mb'):.2f} RSS", "-", None))
    return rows, med(gc, "wall")


def compare_small(out: Path, rounds: int, log) -> list[Row]:
    log(f"five small models: one call vs five calls, {rounds} rounds")
    paths = [str(out / f"{name}.keras") for name in SMALL]
    res = alternate({"one call": [[*ANALYZE, *paths]],
                     "five calls": [[*ANALYZE, p] for p in paths]}, rounds, (0, 1), log)
    ratio = median_ratio(res["one call"], res["five calls"], "wall")
    return [Row("5 small models: one call / five calls",
                f"{med(res['one call'], 'wall'):.2f} s / {med(res['five calls'], 'wall'):.2f} s = "
                f"{ratio:.2f} (CPU time {median_ratio(res['one call'], res['five calls'], 'cpu'):.2f})",
                "<= 0.4", ratio <= 0.4)]


def compare_jobs(out: Path, rounds: int, log) -> list[Row]:
    """Twelve keras.applications models: ``-j 2`` vs ``-j 1`` (and the same report)."""
    log(f"zoo of {len(ZOO)} models: -j 2 vs -j 1, {rounds} rounds")
    paths = [str(out / f"zoo_{name}.keras") for name in ZOO]
    reports = {}
    for jobs in ("1", "2"):
        done = subprocess.run([*ANALYZE, "-q", "-f", "json", "-j", jobs, *paths], cwd=ROOT,
                              capture_output=True, text=True)
        reports[jobs] = done.stdout
    res = alternate({"-j 2": [[*ANALYZE, "-q", "-j", "2", *paths]],
                     "-j 1": [[*ANALYZE, "-q", "-j", "1", *paths]]}, rounds, (0, 1), log)
    ratio = median_ratio(res["-j 2"], res["-j 1"], "wall")
    same = reports["1"] == reports["2"] and bool(reports["1"])
    return [Row(f"zoo of {len(ZOO)} models: -j 2 / -j 1",
                f"{med(res['-j 2'], 'wall'):.2f} s / {med(res['-j 1'], 'wall'):.2f} s = {ratio:.2f}"
                f" (peak RSS {med(res['-j 2'], 'rss_mb'):.0f} / {med(res['-j 1'], 'rss_mb'):.0f} MB)",
                "< 1.0", ratio < 1.0),
            Row("zoo: -j 2 report identical to -j 1", "identical" if same else "DIFFERENT",
                "identical", same)]


def compare_cached(out: Path, rounds: int, log) -> list[Row]:
    """Twenty small models (the five samples, four copies each): a first run, then runs on the
    unchanged set, which the result cache answers, then one after a model's bytes changed."""
    import shutil

    folder = out / "cached20"
    folder.mkdir(exist_ok=True)
    paths = []
    for copy in range(4):
        for name in SMALL:
            path = folder / f"{name}_{copy}.keras"
            shutil.copy2(out / f"{name}.keras", path)
            paths.append(str(path))
    log(f"result cache: {len(paths)} small models, a first run then {rounds} unchanged runs")
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {"GRADCHECK_CACHE_KEY": "bench " * 8}
        command = [GRADCHECK, "-q", "--cache-dir", cache_dir, *paths]
        first = run(command, env=env)
        check_code(first, (0, 1), "gradcheck (first run)")
        again = [run(command, env=env) for _ in range(rounds)]
        for result in again:
            check_code(result, (first.code,), "gradcheck (cached run)")
        traced = subprocess.run([PYTHON, "-X", "importtime", "-m", "gradcheck", "-q", "--cache-dir",
                                 cache_dir, *paths], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, **env})
        tf_lines = [line for line in traced.stderr.splitlines() if "tensorflow" in line]
        shutil.copy2(out / f"{SMALL[1]}.keras", paths[0])  # one model's bytes change
        changed = subprocess.run([GRADCHECK, "--cache-dir", cache_dir, *paths], cwd=ROOT,
                                 capture_output=True, text=True, env={**os.environ, **env})
    analyzed = [line for line in changed.stderr.splitlines()
                if line.startswith("gradcheck: [") and not line.endswith("(cached)")]
    wall = med(again, "wall")
    return [Row(f"{len(paths)} small models: cached run / first run",
                f"{wall:.2f} s / {first.wall:.2f} s = {wall / first.wall:.3f} "
                f"(peak RSS {med(again, 'rss_mb'):.0f} / {first.rss_mb:.0f} MB)", "<= 1 s in all",
                wall <= 1.0),
            Row("cached run imports no tensorflow", f"{len(tf_lines)} tensorflow modules imported",
                "0", not tf_lines and traced.returncode == first.code),
            Row("one model changed: sources analyzed again", f"{len(analyzed)} of {len(paths)}",
                "1", len(analyzed) == 1)]


def startup(log, runs: int = 5) -> list[Row]:
    log(f"--help / --version: {runs} runs each")
    rows = []
    for flag in ("--help", "--version"):
        results = [run([GRADCHECK, flag]) for _ in range(runs)]
        for result in results:
            check_code(result, (0,), f"gradcheck {flag}")
        wall = med(results, "wall")
        rows.append(Row(f"gradcheck {flag}", f"{wall:.3f} s, {med(results, 'rss_mb'):.0f} MB",
                        "<= 0.5 s", wall <= 0.5))
    proc = subprocess.run([PYTHON, "-X", "importtime", "-m", "gradcheck", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    tf_lines = [line for line in proc.stderr.splitlines() if "tensorflow" in line]
    modules = len([line for line in proc.stderr.splitlines() if line.startswith("import time:")])
    rows.append(Row("--help imports no tensorflow",
                    f"{len(tf_lines)} tensorflow modules of {modules - 1} imported",
                    "0", not tf_lines and proc.returncode == 0))
    return rows


def phases(args: list[str], timeout: float, log) -> dict | None:
    """Run phases.py; None (logged) if it times out or fails."""
    cmd = [PYTHON, str(HERE / "phases.py"), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        log(f"  phases.py {' '.join(args)}: timed out after {timeout:.0f} s")
        return None
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        log(f"  phases.py {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
        return None
    return json.loads(stdout.strip().splitlines()[-1])


def analysis_time(times: dict) -> float:
    """Graph analysis: building the op graph (inside the trace) + everything after the tape step."""
    return times.get("build_op_graph", 0.0) + times.get("after_step", 0.0)


def describe_phases(label: str, data: dict, log) -> None:
    t, cpu = data["times"], data.get("cpu", {})
    order = ["import_tf", "load", "build_model", "step", "trace", "forward", "tape_gradient",
             "build_op_graph", "probe", "verdicts", "execute", "after_step", "explain", "total"]
    parts = ", ".join(f"{k} {t[k]:.2f}/{cpu.get(k, float('nan')):.2f}" for k in order if k in t)
    log(f"  {label}: {data['op_count']} ops, {data['variables']} variables; seconds wall/CPU: "
        f"{parts}")


def scaling(out: Path, quick: bool, resnet_wall: float | None, timeout: float, log
            ) -> tuple[list[Row], list[tuple[str, dict]]]:
    log("graph analysis (in-process, benchmarks/phases.py)")
    rows, details = [], []
    per_op = {}
    for blocks in ([BLOCKS_5K] if quick else [BLOCKS_5K, BLOCKS_50K]):
        data = phases(["deep", str(blocks)], timeout, log)
        if data is None:
            per_op[blocks] = None
            continue
        describe_phases(f"deep_{blocks}", data, log)
        details.append((f"deep_{blocks}", data))
        t, ops = data["times"], data["op_count"]
        per_op[blocks] = (ops, analysis_time(t) / ops, t.get("build_op_graph", 0) / ops,
                          t.get("after_step", 0) / ops)
        rows.append(Row(f"graph analysis, {ops} ops",
                        f"{analysis_time(t):.2f} s = {1e6 * per_op[blocks][1]:.0f} us/op "
                        f"(op graph {1e6 * per_op[blocks][2]:.0f}, after step "
                        f"{1e6 * per_op[blocks][3]:.0f})", "-", None))
    if not quick:
        small, big = per_op[BLOCKS_5K], per_op[BLOCKS_50K]
        if small and big:
            ratio = big[1] / small[1]
            rows.append(Row("graph analysis: us/op at 50k / at 5k", f"{ratio:.2f}", "<= 1.5",
                            ratio <= 1.5))
        else:
            rows.append(Row("graph analysis: us/op at 50k / at 5k",
                            f"no result (timed out after {timeout:.0f} s or failed, see log)",
                            "<= 1.5", False))
    data = phases(["file", str(out / "resnet50.keras")], timeout, log)
    if data is not None:
        describe_phases("resnet50", data, log)
        details.append(("resnet50", data))
        seconds = analysis_time(data["times"])
        wall = resnet_wall or data["times"]["total"]
        share = seconds / wall
        of = "wall" if resnet_wall else "in-process total"
        rows.append(Row(f"graph analysis share of resnet50 {of}",
                        f"{seconds:.2f} s / {wall:.2f} s = {100 * share:.1f} % (after step alone "
                        f"{100 * data['times'].get('after_step', 0) / wall:.1f} %)", "< 10 %",
                        share < 0.10))
    return rows, details


def code_state() -> str:
    """The gradcheck code measured: HEAD and any uncommitted changes under gradcheck/."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "gradcheck").splitlines()]
    return f"gradcheck at {head}" + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    versions = subprocess.run(
        [PYTHON, "-c", "import importlib.metadata as m; print(', '.join(f'{p} ' + m.version(p) "
         "for p in ('tensorflow', 'keras', 'keras-hub', 'gradcheck')))"],
        capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; {versions}")


def table(rows: list[Row]) -> str:
    head = ("check", "measured", "target", "")
    cells = [head] + [(r.name, r.measured, r.target, verdict(r.ok)) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(4)) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def build_models(out: Path, big: list[str], parts: set[str], log) -> None:
    """Build the models the chosen parts run on into ``out``, once (they are kept there)."""
    zoo = [f"zoo_{name}" for name in ZOO] if "zoo" in parts else []
    needed = (big if parts & {"big", "scaling"} else []) + list(SMALL) + zoo
    missing = [n for n in needed if not (out / f"{n}.keras").exists()]
    if missing:
        log(f"building {', '.join(missing)} into {out} (once; cached)")
        subprocess.run([PYTHON, str(HERE / "models.py"), str(out), *missing], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per pair")
    parser.add_argument("--quick", action="store_true", help="skip BERT and the 50k-op model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out", help="model directory")
    parser.add_argument("--no-real-weights", action="store_true",
                        help="skip the informational --real-weights runs")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds allowed per in-process phase measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--parts", default="startup,cached,big,small,zoo,scaling",
                        help="comma-separated subset of startup,cached,big,small,zoo,scaling")
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    parts = set(args.parts.split(","))
    big = ["resnet50"] + ([] if args.quick else ["bert_base_tagger"])
    build_models(args.out, big, parts, log)

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    code_before = code_state()
    rows: list[Row] = startup(log) if "startup" in parts else []
    if "cached" in parts:
        rows += compare_cached(args.out, args.rounds, log)
    resnet_wall = None
    for name in (big if "big" in parts else []):
        big_rows, wall = compare_big(name, args.out / f"{name}.keras", args.rounds,
                                     not args.no_real_weights, log)
        if name == "resnet50":
            resnet_wall = wall
        rows += big_rows
    if "small" in parts:
        rows += compare_small(args.out, args.rounds, log)
    if "zoo" in parts:
        rows += compare_jobs(args.out, args.rounds, log)
    details = []
    if "scaling" in parts:
        scale_rows, details = scaling(args.out, args.quick, resnet_wall, args.timeout, log)
        rows += scale_rows

    print(f"gradcheck benchmark ({args.rounds} rounds{', quick' if args.quick else ''}, "
          f"{time.perf_counter() - started:.0f} s)")
    print(f"machine: {machine()}")
    code_after = code_state()
    print(f"code: {code_after}" + ("" if code_after == code_before else
                                  f" (CHANGED during the run; at start: {code_before})"))
    print(f"load average at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          "(other work on the machine inflates and scatters wall times; CPU-time ratios in "
          "parentheses)")
    print()
    print(table(rows))
    failed = [r for r in rows if r.ok is False]
    print()
    print(f"{len(failed)} of {sum(r.ok is not None for r in rows)} targets fail"
          + (": " + "; ".join(r.name for r in failed) if failed else "."))
    if args.json:
        args.json.write_text(json.dumps({"rows": [r.__dict__ for r in rows],
                                         "phases": dict(details)}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
