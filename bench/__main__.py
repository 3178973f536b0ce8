"""The benchmark harness: what orchestration and tracking cost, what caching saves, and where the limits are.

    make bench                     every benchmark (about 50 minutes on 2 cores, 20 of them the sweeps)
    make bench-smoke               a quick check that the harness works: tiny data, 1 repetition
    .venv/bin/python -m bench [--smoke] [--only NAME ...] [--reps N] [--out DIR]

Writes <out>/<name>.json per benchmark (default bench/results/) and the report docs/benchmarks.md,
rebuilt from every JSON in the results folder, so `--only NAME` refreshes one benchmark's section.
The smoke mode writes both into a temporary folder (or --out), never into bench/results/ or docs/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import caching, compression, input_pipeline, memory, onnx_latency, overhead, report, scaling, sweep, sweep_mnist, unseen
from bench.common import DOCS, REPO, RESULTS, Context, PrefectServer, write_result

# In run order: the overhead repetitions come first, and caching, memory, input_pipeline, scaling
# and compression reuse them; the sweeps run their own.
BENCHMARKS = {
    module.NAME: module
    for module in (overhead, caching, memory, input_pipeline, scaling, compression, unseen, onnx_latency, sweep, sweep_mnist)
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 repetition, results in a temporary folder")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of each comparison (default 3; smoke 1)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/; smoke: a temporary one)")
    args = parser.parse_args(argv)

    temporary = None
    if args.smoke and args.out is None:
        temporary = Path(tempfile.mkdtemp(prefix="shrinkflow-bench-smoke-"))
    out_dir = args.out or temporary or RESULTS
    work_dir = (out_dir / ".work") if args.smoke else REPO / "bench" / ".work"
    ctx = Context(out_dir=out_dir, work_dir=work_dir, smoke=args.smoke, reps=args.reps or (1 if args.smoke else 3))
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    names = args.only or list(BENCHMARKS)
    started = time.perf_counter()
    if args.smoke:  # one warm server for the smoke runs, starting while the plain script runs
        ctx.shared["warm_server"] = PrefectServer(ctx.fresh_dir("prefect-warm-home"))
    try:
        for name in names:
            print(f"== {name}", flush=True)
            begin = time.perf_counter()
            result = BENCHMARKS[name].run(ctx)
            if result is None:
                print("   skipped in smoke mode", flush=True)
                continue
            path = write_result(ctx, name, result, command.strip(), time.perf_counter() - begin)
            print(f"   {path} ({time.perf_counter() - begin:.0f} s)", flush=True)
        doc = out_dir / "benchmarks.md" if args.smoke or args.out else DOCS
        report.write(out_dir, doc, BENCHMARKS)
        print(f"== report: {doc}\n")
        print(report.headline(out_dir, BENCHMARKS))
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if "warm_server" in ctx.shared:
            ctx.shared["warm_server"].stop()
        if args.smoke:  # the full run keeps bench/.work/ (git-ignored): each child's log, for a look afterwards
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
