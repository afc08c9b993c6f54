"""`keel app export APP PATH`: the current version back to files, so an apply from that folder keeps what
was changed on the pages or by a rollback; stale definition files go, other files stay, and a folder
holding another app is refused."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_cli import keel, run

LEAVE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "leave"


def test_export_after_a_rollback_keeps_the_rollback_on_the_next_apply(tmp_path):
    env = {"KEEL_INSTANCE_PATH": str(tmp_path / "inst"), "KEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
           "KEEL_ENV": "development", "KEEL_APPS_PATH": str(tmp_path / "none")}
    folder = tmp_path / "leave"
    shutil.copytree(LEAVE, folder)
    assert run(env, "app", "apply", str(folder)).exit_code == 0
    entity = folder / "entities" / "leave_request.json"
    doc = json.loads(entity.read_text())
    doc["fields"].append({"id": "deputy", "type": "user"})
    entity.write_text(json.dumps(doc))
    (folder / "notes.md").write_text("kept")
    assert run(env, "app", "apply", str(folder)).exit_code == 0  # v2 with deputy
    assert run(env, "app", "rollback", "leave", "1").exit_code == 0  # v3 = v1
    # the old folder would undo the rollback; exporting over it makes it the current version again
    (folder / "notifications" / "stale.json").write_text(json.dumps({"id": "stale"}))
    r = run(env, "app", "export", "leave", str(folder))
    assert r.exit_code == 0 and "version 3" in r.output and "removed notifications/stale.json" in r.output
    assert "deputy" not in entity.read_text() and (folder / "notes.md").read_text() == "kept"
    assert "请假申请" in entity.read_text()  # UTF-8 as written, not \\u escapes
    r = run(env, "app", "diff", str(folder))
    assert "no changes" in r.output
    # a folder holding another app is refused, and nothing is written into it
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.json").write_text(json.dumps({"id": "crm"}))
    p = keel(env, "app", "export", "leave", str(other))
    assert p.returncode == 1 and "crm" in p.stderr and "Traceback" not in p.stderr
    assert sorted(x.name for x in other.iterdir()) == ["app.json"]
    p = keel(env, "app", "export", "nope", str(tmp_path / "x"))
    assert p.returncode == 1 and "nope" in p.stderr
