#!/usr/bin/env python3
"""Long fuzzing run of the sans-IO core: 10^6 inputs per target, outside the normal test run.

The targets (oracle + structure-aware random generator) are the ones the fast hypothesis tests use:
``tests/reliability/fuzz_targets.py`` (frame decoder, signaling parser, JWT verifier, origin
normaliser, config loader, destination policy). Each target runs in its own process, ``--jobs`` at
a time; every input that makes ``check`` raise is a finding, grouped by exception type and the
innermost ``aero_relay`` frame, with up to ``--examples`` reproducers each (the generator seed and
the input's index reproduce any input exactly).

Engine: a seeded ``random.Random`` generator, not atheris (coverage-guided fuzzing would need a new
dependency; the generators are structure-aware instead) and not hypothesis (its per-example
overhead makes 10^6 examples take hours). Every loop is bounded by ``--count`` and ``--max-seconds``.

    .venv/bin/python benchmarks/fuzz_runner.py                  # all targets, 10^6 each, 2 jobs
    .venv/bin/python benchmarks/fuzz_runner.py --count 10000 --targets frames jwt

Writes ``benchmarks/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import platform
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.fuzz_targets import TARGETS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame in aero_relay (else the innermost frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/aero_relay/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def run_target(name: str, count: int, seed: int, max_seconds: float, examples: int) -> dict[str, Any]:
    target = TARGETS[name]
    rnd = random.Random(f"{seed}:{name}")
    findings: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    deadline = start + max_seconds
    done = 0
    for i in range(count):
        inp = target.generate(rnd)
        try:
            target.check(inp)
        except Exception as exc:  # every escape from check() is a finding
            sig = _signature(exc)
            entry = findings.setdefault(sig, {"count": 0, "examples": []})
            entry["count"] += 1
            if len(entry["examples"]) < examples:
                entry["examples"].append({"index": i, "input": repr(inp)[:2000], "error": str(exc)[:500]})
        done = i + 1
        if done % 100_000 == 0:
            print(f"[{name}] {done} inputs, {len(findings)} distinct findings", file=sys.stderr, flush=True)
            if time.perf_counter() > deadline:
                break
    seconds = time.perf_counter() - start
    return {
        "target": name,
        "inputs": done,
        "seconds": round(seconds, 1),
        "inputs_per_second": round(done / seconds) if seconds else None,
        "outcome": "findings" if findings else "ok",
        "failing_inputs": sum(f["count"] for f in findings.values()),
        "findings": findings,
        "complete": done == count,
    }


def _run(args: tuple[str, int, int, float, int]) -> dict[str, Any]:
    return run_target(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs per target")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--jobs", type=int, default=2, help="targets fuzzed in parallel (one process each)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="per-target time bound")
    ap.add_argument("--examples", type=int, default=5, help="reproducers kept per distinct finding")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    started = time.time()
    jobs = [(name, args.count, args.seed, args.max_seconds, args.examples) for name in args.targets]
    results: dict[str, Any] = {}
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        for res in pool.imap_unordered(_run, jobs):
            results[res["target"]] = res
            print(
                f"{res['target']}: {res['inputs']} inputs in {res['seconds']} s, {res['outcome']}"
                f" ({res['failing_inputs']} failing)",
                flush=True,
            )
    report = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": "seeded random, structure-aware generators + mutations (tests/reliability/fuzz_targets.py)",
        "seed": args.seed,
        "count_per_target": args.count,
        "python": platform.python_version(),
        "wall_seconds": round(time.time() - started, 1),
        "total_inputs": sum(r["inputs"] for r in results.values()),
        "targets": {name: results[name] for name in args.targets if name in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(r["outcome"] != "ok" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
