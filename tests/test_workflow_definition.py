"""Workflow definitions: every mistake the checks find is reported as file, JSON pointer and message, all
of them at once, through the same loader `keel app validate` uses."""
from __future__ import annotations

import copy

import pytest

from helpers_registries import REGISTRIES
from keel.definitions.errors import DefinitionErrors
from keel.definitions.loader import load_bundle, read_bundle
from test_workflow_support import FIXTURE

FLOW = "workflows/twostep_flow.json"


@pytest.fixture(scope="module")
def base() -> dict:
    return read_bundle(FIXTURE, REGISTRIES)


def errors_of(bundle: dict) -> list[tuple[str, str, str]]:
    with pytest.raises(DefinitionErrors) as e:
        load_bundle(bundle, REGISTRIES)
    return [(x.file, x.pointer, x.message) for x in e.value.errors]


def edit(base: dict, path: str = FLOW, **changes) -> dict:
    bundle = copy.deepcopy(base)
    bundle[path].update(changes)
    return bundle


def test_the_fixture_and_the_demo_app_are_valid(base):
    from keel.definitions.loader import load_app_dir
    from test_workflow_support import FIXTURE as _  # noqa: F401

    assert set(load_bundle(base, REGISTRIES).definitions_of("workflow")) == {"allof_flow", "anyof_flow", "chain_flow", "twostep_flow",
                                                "quorum_flow"}
    demo = load_app_dir(FIXTURE.parent.parent.parent / "app_definitions" / "goal_agility", REGISTRIES)
    assert "revision_approval" in demo.definitions_of("workflow")


def test_unreachable_state(base):
    states = [{"id": "done", "final": "approved"}, {"id": "limbo", "next": [{"to": "done"}]}]
    found = errors_of(edit(base, states=states))
    assert (FLOW, "/states/1/id", "unreachable: no transition from the start ('manager') leads to 'limbo'") in found


def test_transition_to_an_unknown_state(base):
    bundle = copy.deepcopy(base)
    bundle[FLOW]["steps"][1]["next"] = [{"to": "finanse"}]
    found = errors_of(bundle)
    assert any(f == FLOW and p == "/steps/1/next/0/to" and "unknown state 'finanse'" in m for f, p, m in found), found


def test_approver_rule_naming_an_unknown_role_or_field(base):
    bundle = copy.deepcopy(base)
    bundle[FLOW]["steps"][0]["approvers"] = [{"rule": "role", "role": "auditor"},
                                             {"rule": "user", "field": "title"},
                                             {"rule": "manager_of", "of": "owner"},
                                             {"rule": "telepathy"}]
    found = {(p, m.split(";")[0].split(" (")[0]) for f, p, m in errors_of(bundle) if f == FLOW}
    assert ("/steps/0/approvers/0/role", "unknown role 'auditor'") in found
    assert ("/steps/0/approvers/1/field", "'title' is a text field") in found
    assert ("/steps/0/approvers/2/of", "no field 'owner' in entity 'expense'") in found
    assert ("/steps/0/approvers/3/rule", "unknown approver rule 'telepathy'") in found


def test_cycle_without_exit(base):
    steps = [{"id": "a", "approvers": [{"rule": "role", "role": "finance"}], "next": [{"to": "b"}]},
             {"id": "b", "approvers": [{"rule": "role", "role": "finance"}], "next": [{"to": "a"}]}]
    found = errors_of(edit(base, steps=steps, states=[]))
    assert (FLOW, "/steps/0/next", "cycle without exit: a -> b -> a never reaches a final state") in found


def test_a_cycle_with_an_exit_is_fine(base):
    steps = [{"id": "a", "approvers": [{"rule": "role", "role": "finance"}], "next": [{"to": "b"}]},
             {"id": "b", "approvers": [{"rule": "role", "role": "finance"}],
              "next": [{"to": "a", "when": "amount > 100"}, {"to": "approved"}]}]
    assert "twostep_flow" in load_bundle(edit(base, steps=steps, states=[]), REGISTRIES).definitions_of("workflow")


def test_actions_expressions_and_the_rest(base):
    bundle = copy.deepcopy(base)
    flow = bundle[FLOW]
    flow["steps"][0]["next"] = [{"to": "big", "when": "amount >"}, {"to": "finance", "when": "colour == 'red'"}]
    flow["steps"][2]["quorum"] = 2
    flow["steps"][2]["mode"] = "any"
    flow["status_field"] = "title"
    flow["on_approved"] = [{"action": "teleport"}, {"action": "set_fields", "values": {"amount": "lots"}},
                           {"action": "notify", "template": "nope"}]
    found = {(p, m) for f, p, m in errors_of(bundle) if f == FLOW}
    pointers = {p for p, _ in found}
    assert "/steps/0/next/0/when" in pointers                       # does not compile
    assert ("/steps/0/next/1/when", ("unknown name 'colour' in expression \"colour == 'red'\"; it may only "
                                     "name fields of entity 'expense'")) in found
    assert any(p == "/steps/0/next/1/when" and "last transition must have no condition" in m for p, m in found)
    assert any(p == "/steps/2/quorum" for p, _ in found)
    assert any(p == "/status_field" and "select" in m for p, m in found)
    assert any(p == "/on_approved/0/action" and "unknown action 'teleport'" in m for p, m in found)
    assert any(p == "/on_approved/1/values/amount" for p, _ in found)
    assert any(p == "/on_approved/2/template" and "no notification 'nope'" in m for p, m in found)


def test_the_schema_refuses_unknown_keys_and_modes(base):
    bundle = copy.deepcopy(base)
    bundle[FLOW]["steps"][0]["mode"] = "majority"
    bundle[FLOW]["steps"][0]["approver"] = []
    found = {(p, m.split(";")[0]) for f, p, m in errors_of(bundle) if f == FLOW}
    assert ("/steps/0/approver", "unknown key 'approver'") in found
    assert any(p == "/steps/0/mode" for p, _ in found)


def test_cli_validate_reports_file_pointer_message(tmp_path, base):
    import json
    import subprocess
    import sys

    for path, doc in edit(base, start="nowhere").items():
        target = tmp_path / "app" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc), "utf-8")
    out = subprocess.run([sys.executable, "-m", "keel.cli", "app", "validate", str(tmp_path / "app")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "workflows/twostep_flow.json: /start: unknown state 'nowhere'" in out.stdout + out.stderr
