"""``make bench``: run every bench/bench_*.py, print one table, write JSON under bench/results/.

Each benchmark module exposes ``run(quick: bool = False) -> list[dict]``; a
row holds name, ours, peer, peer_name, unit, ratio and target. The peer is
measured in the same run on the same machine, so the ratio is meaningful
even where the absolute figures are not. A row's ``ours`` may be text (a
level name) where the figure is not a number. A module may write its own
detail file beside latest.json (bench_skab: skab-valve1.json, per file).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(rows: list[dict]) -> str:
    headers = ["benchmark", "ours", "peer", "peer name", "unit", "ratio", "target"]
    cells = [
        [
            r["name"],
            fmt(r.get("ours")),
            fmt(r.get("peer")),
            r.get("peer_name", ""),
            r.get("unit", ""),
            fmt(r.get("ratio")),
            r.get("target", ""),
        ]
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [headers, *cells]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _no_operator_token_warning(record: logging.LogRecord) -> bool:
    """The benchmarks' hubs serve no operator API: their start-up warning about it is not news."""
    return not record.getMessage().startswith("no operator token exists yet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run edge-agent's benchmarks against their peers.")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the benchmarks)")
    parser.add_argument("--only", nargs="*", help="run benchmarks whose module name contains one of these")
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    logging.getLogger("edge_hub").addFilter(_no_operator_token_warning)
    rows: list[dict] = []
    failures: list[str] = []
    for name in discover(args.only):
        if not args.json:
            print(f"== {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run(quick=args.quick)
        except Exception:
            failures.append(name)
            traceback.print_exc()
            continue
        for row in result:
            row.setdefault("module", name)
            rows.append(row)
            if not args.json:
                print(
                    f"   {row['name']}: ours {fmt(row.get('ours'))} {row.get('unit', '')}"
                    f" | {row.get('peer_name', 'peer')} {fmt(row.get('peer'))} | ratio {fmt(row.get('ratio'))}",
                    file=sys.stderr,
                    flush=True,
                )
        if not args.json:
            print(f"   ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "arch": platform.machine(),
            "python": platform.python_version(),
            "processor": platform.processor(),
        },
        "quick": args.quick,
        "results": rows,
        "failed": failures,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (out_dir / f"bench-{stamp}.json", out_dir / "latest.json"):
        path.write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(rows))
        print(f"\nwritten to {out_dir / 'latest.json'}")
    if failures:
        print(f"benchmarks that failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


def run_one(module_file: str) -> int:
    """``python -m bench.bench_x [--quick]``: that one benchmark, through the same table and JSON."""
    return main(["--only", Path(module_file).stem, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
