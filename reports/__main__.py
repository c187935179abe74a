import argparse
import sys

from reports.build import build

p = argparse.ArgumentParser(prog="python -m reports", description="tables and figures from run directories")
p.add_argument("--results", default="results", help="directory holding the run directories")
p.add_argument("--out", default="reports/out", help="output directory (replaced)")
args = p.parse_args()
made = build(args.results, args.out)
print(f"wrote {args.out}/report.md, index.html, {len(made['tables'])} tables, {len(made['figures'])} figure files")
sys.exit(0)
