"""The published report (docs/report/) is what the committed reference runs (results/reference/) give:
rebuilt here from those records, every table must come out byte for byte as committed. A changed
record, a changed report generator or a hand edit of the report fails this test until the report is
rebuilt with `make report-reference` and committed."""
from pathlib import Path

from reports.build import build, reference_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS, PUBLISHED = ROOT / "results" / "reference" / "quick", ROOT / "docs" / "report"


def test_published_tables_match_the_reference_runs(tmp_path):
    assert any(RESULTS.glob("*/result.json")), f"{RESULTS}: no reference runs committed"
    build(reference_results(), tmp_path / "report")
    published = sorted(p.name for p in (PUBLISHED / "tables").iterdir())
    rebuilt = sorted(p.name for p in (tmp_path / "report" / "tables").iterdir())
    assert rebuilt == published
    for name in published:
        assert (tmp_path / "report" / "tables" / name).read_text() == (PUBLISHED / "tables" / name).read_text(), (
            f"docs/report/tables/{name} differs from the report the reference runs give: run make report-reference")


def test_the_check_sees_a_changed_record(tmp_path):
    """Not vacuous: editing one committed result changes a published table."""
    import json
    import shutil

    copies = []
    for d in reference_results():  # every folder the published report reads, one of them then edited
        copies.append(tmp_path / "results" / d.name)
        shutil.copytree(d, copies[-1], ignore=shutil.ignore_patterns("checkpoint*", "lock"))
    copy = copies[0]
    build(copies, tmp_path / "unchanged")
    assert all((tmp_path / "unchanged" / "tables" / p.name).read_text() == p.read_text()
               for p in (PUBLISHED / "tables").glob("*.csv")), "the copies alone already change a table"
    first = sorted(copy.glob("*/result.json"))[0]
    r = json.loads(first.read_text())
    r["final_test_acc"] = r["final_test_acc"] / 2
    first.write_text(json.dumps(r))
    build(copies, tmp_path / "report")
    changed = [p.name for p in (PUBLISHED / "tables").glob("*.csv")
               if (tmp_path / "report" / "tables" / p.name).read_text() != p.read_text()]
    assert changed, "halving a run's accuracy changed no published table"
