"""Every message of the measures' page and code (a plugin, outside the engine's extraction) is in the zh catalog."""
from __future__ import annotations

from babel.messages.extract import extract_from_dir

from helpers_goal_measure import REPO
from test_i18n import KEYWORDS, catalog

MEASURE = REPO / "plugins" / "keel_goal_agility" / "src" / "keel_goal_agility" / "measure"


def test_every_message_of_the_measures_is_translated():
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    found = {msg[0] if isinstance(msg, tuple) else msg
             for _f, _l, msg, _c, _x in extract_from_dir(str(MEASURE), method_map, keywords=KEYWORDS)}
    found.discard("")
    assert len(found) > 25
    known = {m.id: m.string for m in catalog() if m.id}
    assert sorted(found - set(known)) == []
    assert all(known[m] for m in found)
