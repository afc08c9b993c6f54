"""The docs hold together: every relative link and every docs/*.md a source file cites exists, every
expression function is documented, and nothing is promised "for a later release"."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_in_the_docs_point_to_files_that_exist():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_docs_cited_by_the_source_exist():
    cited = set()
    for path in list((ROOT / "platform").rglob("*.py")) + list((ROOT / "tests").glob("*.py")):
        cited |= set(re.findall(r"\b(docs/[a-z_]+\.md)\b", path.read_text(encoding="utf-8")))
        assert not re.search(r"(?<![/\w])SECURITY\.md", path.read_text(encoding="utf-8")), path
    assert "docs/security.md" in cited
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert not missing, missing


def test_every_expression_function_is_documented():
    from keel.expressions import FUNCTIONS

    text = (ROOT / "docs" / "definitions.md").read_text(encoding="utf-8")
    assert not [name for name in FUNCTIONS if f"`{name}" not in text]


def test_nothing_is_reserved_for_a_later_release():
    for doc in DOCS:
        assert "later release" not in doc.read_text(encoding="utf-8"), doc
