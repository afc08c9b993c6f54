"""`keel app validate` reports reference errors together with schema errors, in one run: a schema error
in an entity no longer hides that entity's broken links, nor the forms and workflows that name it, and
a part the schema refused does not cause a second, misleading error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers_registries import REGISTRIES
from keel.definitions.errors import DefinitionErrors
from keel.definitions.loader import load_app_dir

LEAVE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "leave"


def _edit(folder: Path, rel: str, change) -> None:
    path = folder / rel
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def _places(folder: Path) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionErrors) as e:
        load_app_dir(folder, REGISTRIES)
    return [(err.file, err.pointer) for err in e.value.errors]


def test_schema_and_reference_errors_of_every_file_come_in_one_run(tmp_path):
    app = tmp_path / "leave"
    shutil.copytree(LEAVE, app)

    def entity(doc):
        doc["colour"] = "blue"                                      # schema: unknown key
        doc["fields"].append({"id": "deputy", "type": "link", "entity": "nowhere"})  # reference

    _edit(app, "entities/leave_request.json", entity)
    _edit(app, "forms/leave_request.json", lambda d: d["fields"].append({"field": "ghost"}))
    _edit(app, "workflows/leave_approval.json",
          lambda d: d["steps"][0]["next"][0].update(when="dayz > 3"))
    assert _places(app) == [
        ("entities/leave_request.json", "/colour"),
        ("entities/leave_request.json", "/fields/6/entity"),
        ("forms/leave_request.json", "/fields/4"),
        ("workflows/leave_approval.json", "/steps/0/next/0/when"),
    ]


def test_a_refused_part_does_not_cause_a_follow_on_error(tmp_path):
    app = tmp_path / "leave"
    shutil.copytree(LEAVE, app)

    def entity(doc):
        kind = doc["fields"][0]
        kind["default"] = "annual"
        kind["options"][0]["id"] = "Annual Leave"  # schema: not an id; the default then names no option
        doc["fields"][4]["max_length"] = "long"    # schema: not a number
        doc["rules"][0]["field"] = "nowhere"       # reference, elsewhere in the file

    _edit(app, "entities/leave_request.json", entity)
    assert _places(app) == [
        ("entities/leave_request.json", "/fields/0/options/0/id"),
        ("entities/leave_request.json", "/fields/4/max_length"),
        ("entities/leave_request.json", "/rules/0/field"),
    ]


def test_an_entity_refused_as_a_whole_still_silences_references_to_it(tmp_path):
    app = tmp_path / "leave"
    shutil.copytree(LEAVE, app)
    _edit(app, "entities/leave_request.json", lambda d: d.pop("fields"))
    places = _places(app)
    assert places[0] == ("entities/leave_request.json", "")
    assert not [p for p in places if p[0].startswith("forms/")]  # no "no entity" noise
