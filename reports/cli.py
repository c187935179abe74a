"""``python -m reports --results results [more results folders] --out reports/out``."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.cli import OneLineParser
from bench.errors import WRITE_ERRNOS
from reports.build import ReportError, build, reference_results


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m reports", description="tables and figures from run directories",
                      allow_abbrev=False)
    p.add_argument("--results", nargs="+", default=["results"],
                   help="directories holding the run directories (several: one report of all their runs)")
    p.add_argument("--reference", action="store_true",
                   help="read the committed reference runs of the checkout in the current folder instead "
                        "(reports/build.py REFERENCE_RESULTS)")
    p.add_argument("--out", default="reports/out",
                   help="output directory (a previous report there is replaced; nothing else is)")
    p.add_argument("--include-smoke", action="store_true",
                   help="show smoke-preset runs (tests, not results) in the tables, marked, without verdicts")
    args, extra = p.parse_known_args(argv)
    if extra:  # one line, as bench's CLI says it (no flag prefixes: allow_abbrev is off)
        print(f"python -m reports: unrecognized arguments: {' '.join(extra)}; see python -m reports --help",
              file=sys.stderr)
        return 2
    try:
        # the current folder, not this file's: a campaign runs a frozen copy of the code in the checkout
        # named relative to the checkout, so the published report names no one's home folder
        results = ([d.relative_to(Path.cwd()) for d in reference_results(Path.cwd())] if args.reference
                   else args.results)
        if args.reference and not results:
            raise ReportError(f"--reference: no runs under {Path.cwd()}/results/reference/; run it in the checkout")
        made = build(results, args.out, include_smoke=args.include_smoke)
    except ReportError as e:
        print(f"report error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or foreign folder: the previous report is kept
        if e.errno not in WRITE_ERRNOS:
            raise
        print(f"write error: {e.filename or args.out}: {e.strerror}; the previous report in {args.out} is unchanged",
              file=sys.stderr)
        return 1
    print(f"wrote {args.out}/report.md, index.html, {len(made['tables'])} tables, {len(made['figures'])} figure files")
    return 0
