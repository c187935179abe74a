"""The published report (docs/report/) is what the committed reference runs (results/reference/) give:
rebuilt here from those records, every table must come out byte for byte as committed. A changed
record, a changed report generator or a hand edit of the report fails this test until the report is
rebuilt with `make report-reference` and committed."""
import json
import shutil
from pathlib import Path

import pytest

from reports.build import build, reference_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS, PUBLISHED = ROOT / "results" / "reference" / "quick", ROOT / "docs" / "report"


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Copies of every folder the published report reads, and the report they give (built once: a build of all
    reference runs takes most of this file's time)."""
    root = tmp_path_factory.mktemp("reference")
    folders = []
    for d in reference_results():
        folders.append(root / "results" / d.name)
        shutil.copytree(d, folders[-1], ignore=shutil.ignore_patterns("checkpoint*", "lock"))
    build(folders, root / "report")
    return folders, root / "report"


def test_published_tables_match_the_reference_runs(copies):
    assert any(RESULTS.glob("*/result.json")), f"{RESULTS}: no reference runs committed"
    _, report = copies
    published = sorted(p.name for p in (PUBLISHED / "tables").iterdir())
    rebuilt = sorted(p.name for p in (report / "tables").iterdir())
    assert rebuilt == published
    for name in published:
        assert (report / "tables" / name).read_text() == (PUBLISHED / "tables" / name).read_text(), (
            f"docs/report/tables/{name} differs from the report the reference runs give: run make report-reference")


def test_the_check_sees_a_changed_record(copies, tmp_path):
    """Not vacuous: editing one committed result changes a published table (the unedited copies, at other
    paths than the originals, give the published tables: the test above)."""
    folders, _ = copies
    edited = tmp_path / folders[0].name
    shutil.copytree(folders[0], edited)
    first = sorted(edited.glob("*/result.json"))[0]
    r = json.loads(first.read_text())
    r["final_test_acc"] = r["final_test_acc"] / 2
    first.write_text(json.dumps(r))
    build([edited, *folders[1:]], tmp_path / "report")
    changed = [p.name for p in (PUBLISHED / "tables").glob("*.csv")
               if (tmp_path / "report" / "tables" / p.name).read_text() != p.read_text()]
    assert changed, "halving a run's accuracy changed no published table"
