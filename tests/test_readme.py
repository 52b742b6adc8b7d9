"""The README is a landing page: short, with the command CI runs and the claims table between its markers."""

import re
from pathlib import Path

from test_claims import IDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLAIM_IDS = IDS  # the claim ids, fixed in test_claims


def test_ci_runs_exactly_the_readme_test_command():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command.startswith("python3 -m venv")
    assert ci_command in README


def test_readme_stays_a_landing_page():
    assert len(README.splitlines()) <= 250


def test_claims_table_has_a_row_with_a_status_for_every_claim():
    table = re.search(r"<!-- claims:start -->(.*?)<!-- claims:end -->", README, flags=re.DOTALL)
    assert table, "README lacks the <!-- claims:start --> ... <!-- claims:end --> markers"
    for claim in CLAIM_IDS:
        rows = [line for line in table.group(1).splitlines() if f"`{claim}`" in line]
        assert len(rows) == 1 and re.search(r"\b(holds|fails|not measured)\b", rows[0]), claim
