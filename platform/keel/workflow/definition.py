"""A workflow definition (`workflows/<id>.json`) as a model, and the checks its JSON Schema cannot make.

    {"id": "revision_approval", "starts_on": {"form": "revision_request"}, "status_field": "status",
     "steps": [{"id": "dual_line", "mode": "all",
                "approvers": [{"rule": "manager_of", "of": "submitter"},
                              {"rule": "department", "code": "strategy", "pick": "head"}],
                "actions": ["approve", "reject", "withdraw", "remind"],
                "sla": {"working_days": 7, "remind_before_days": 1, "escalate": "manager_of_approver"},
                "next": [{"to": "ceo", "when": "proposed_target > 1000000"}, {"to": "approved"}]}],
     "on_approved": [{"action": "set_fields", "values": {"status": "approved"}}]}

A step without `next` goes on to the next step of the list, the last one to `approved`. The final
states `approved`, `rejected` and `withdrawn` exist whether or not `states` declares them; declaring one
adds its label and `on_enter` actions. A routing state (no `final`) needs `next`, and the last
transition of every `next` list must have no condition, so a request always has somewhere to go.

Nothing here touches a database: `workflow_errors` runs inside `keel app validate` and the loader.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.definitions.errors import DefinitionError, pointer
from keel.definitions.model import SYSTEM_COLUMNS, AppDef, Definition, EntityDef, Label
from keel.expressions import ExpressionError, compile_expression
from keel.registries import Registries

MODES = ("single", "sequential", "all", "any")
STEP_ACTIONS = ("approve", "reject", "send_back", "transfer", "add_approvers", "cc", "withdraw", "remind", "bulk")
DEFAULT_ACTIONS = frozenset({"approve", "reject", "transfer", "cc", "withdraw", "remind"})
OUTCOMES = ("approved", "rejected", "withdrawn")
# What a step does with an approver who is the submitter or has already decided in the step.
ON_SELF = ("refuse", "skip_to_superior", "auto_approve")
DEFAULT_BULK_THRESHOLD = 50
MAX_HOPS = 100  # states passed through without stopping at a step: more is a routing loop


@dataclass(frozen=True)
class Transition:
    to: str
    when: str | None
    pointer: str


@dataclass(frozen=True)
class Step:
    id: str
    label: Label
    mode: str
    approvers: tuple[Mapping[str, Any], ...]
    quorum: int | None
    actions: frozenset[str]
    allow_self_approval: bool
    on_reject: str
    sla: Mapping[str, Any] | None
    on_enter: tuple[Mapping[str, Any], ...]
    on_complete: tuple[Mapping[str, Any], ...]
    next: tuple[Transition, ...]
    pointer: str
    on_self: str = "refuse"               # see ON_SELF
    reject_requires_comment: bool = False

    def allows(self, action: str) -> bool:
        return action in self.actions


@dataclass(frozen=True)
class State:
    id: str
    label: Label
    final: str | None
    on_enter: tuple[Mapping[str, Any], ...]
    next: tuple[Transition, ...]
    pointer: str


@dataclass(frozen=True)
class Workflow:
    id: str
    file: str
    label: Label
    form: str | None
    entity: str | None          # the entity whose records it approves (the form's entity for a form)
    when: str | None
    status_field: str | None
    start: str
    steps: Mapping[str, Step]
    states: Mapping[str, State]  # declared states plus the implicit final ones
    outcome_actions: Mapping[str, tuple[Mapping[str, Any], ...]]  # on_approved / on_rejected / on_withdrawn
    fallback_role: str | None
    bulk_queue_threshold: int
    step_order: tuple[str, ...] = field(default=())
    who: tuple[Any, ...] | None = None   # starts_on.who: who may start it; None: whoever may create
    bind_content: bool = False

    def node(self, node_id: str) -> Step | State | None:
        return self.steps.get(node_id) or self.states.get(node_id)

    def final_state(self, outcome: str) -> State:
        """The state an outcome ends in: the first declared with that `final`, else the implicit one."""
        for s in self.states.values():
            if s.final == outcome:
                return s
        raise KeyError(outcome)


def _label(raw: Any, fallback: str) -> Label:
    return Label.parse(raw, fallback)


def _transitions(raw: Any, where: str) -> tuple[Transition, ...]:
    return tuple(Transition(t["to"], t.get("when"), where + pointer("next", i))
                 for i, t in enumerate(raw or ()))


def parse(d: Definition, app: AppDef | None = None, form_entities: Mapping[str, str] | None = None) -> Workflow:
    """The model of a schema-valid workflow definition. `form_entities` (form id -> entity id) or `app`
    tells which entity a form-started workflow approves."""
    data = d.data
    starts = data.get("starts_on") or {}
    if form_entities is None and app is not None:
        form_entities = {f.id: f.entity for f in app.forms.values()}
    form = starts.get("form")
    entity = starts.get("entity") or (form_entities or {}).get(form)
    raw_steps = list(data.get("steps") or ())
    steps: dict[str, Step] = {}
    for i, s in enumerate(raw_steps):
        where = pointer("steps", i)
        nxt = _transitions(s.get("next"), where)
        if not nxt:  # the next step of the list, or the approved state after the last one
            to = raw_steps[i + 1]["id"] if i + 1 < len(raw_steps) else _approved_id(data)
            nxt = (Transition(to, None, where),)
        steps.setdefault(s["id"], Step(
            id=s["id"], label=_label(s.get("label"), s["id"]), mode=s.get("mode", "single"),
            approvers=tuple(s.get("approvers") or ()), quorum=s.get("quorum"),
            actions=frozenset(s["actions"]) if "actions" in s else DEFAULT_ACTIONS,
            allow_self_approval=bool(s.get("allow_self_approval", False)),
            on_reject=s.get("on_reject", "reject_request"), sla=s.get("sla"),
            on_enter=tuple(s.get("on_enter") or ()), on_complete=tuple(s.get("on_complete") or ()),
            next=nxt, pointer=where, on_self=s.get("on_self", "refuse"),
            reject_requires_comment=bool(s.get("reject_requires_comment", False))))
    states: dict[str, State] = {}
    for i, s in enumerate(data.get("states") or ()):
        where = pointer("states", i)
        states.setdefault(s["id"], State(s["id"], _label(s.get("label"), s["id"]), s.get("final"),
                                         tuple(s.get("on_enter") or ()), _transitions(s.get("next"), where),
                                         where))
    for outcome in OUTCOMES:
        if not any(s.final == outcome for s in states.values()) and outcome not in steps:
            states.setdefault(outcome, State(outcome, _label(None, outcome), outcome, (), (), ""))
    start = data.get("start") or (raw_steps[0]["id"] if raw_steps else "approved")
    return Workflow(
        id=d.id, file=d.file, label=_label(data.get("label"), d.id), form=form, entity=entity,
        when=data.get("when"), status_field=data.get("status_field"), start=start, steps=steps, states=states,
        outcome_actions={o: tuple(data.get(f"on_{o}") or ()) for o in OUTCOMES},
        fallback_role=data.get("fallback_role"),
        bulk_queue_threshold=data.get("bulk_queue_threshold", DEFAULT_BULK_THRESHOLD),
        step_order=tuple(steps), who=tuple(starts["who"]) if starts.get("who") else None,
        bind_content=bool(data.get("bind_content", False)))


def _approved_id(data: Mapping[str, Any]) -> str:
    for s in data.get("states") or ():
        if s.get("final") == "approved":
            return s["id"]
    return "approved"


_CACHE: dict[tuple[str, str, str], Workflow] = {}


def workflows_of(app: AppDef) -> dict[str, Workflow]:
    """Every workflow of an app version, parsed once per (app, checksum) per process."""
    form_entities = {f.id: f.entity for f in app.forms.values()}
    out = {}
    for wid, d in app.definitions_of("workflow").items():
        key = (app.id, app.checksum, wid)
        wf = _CACHE.get(key) if app.checksum else None
        if wf is None:
            wf = parse(d, form_entities=form_entities)
            if app.checksum:
                if len(_CACHE) > 2000:
                    _CACHE.clear()
                _CACHE[key] = wf
        out[wid] = wf
    return out


# ---- checks --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What the checks of one workflow may look at in the rest of its app."""

    entities: Mapping[str, EntityDef]
    form_entities: Mapping[str, str]          # form id -> entity id
    roles: frozenset[str] | None               # None: not knowable (app.json broken)
    notifications: frozenset[str] | None
    registries: Registries                      # approver rules and actions to check against
    entity: EntityDef | None = None

    def user_fields(self) -> list[str]:
        return [f.id for f in self.entity.fields if f.type == "user"] if self.entity else []


def workflow_errors(d: Definition, scope: Scope) -> list[DefinitionError]:
    """Every problem of one workflow definition, each with its file and JSON pointer."""
    wf = parse(d, form_entities=scope.form_entities)
    entity = scope.entities.get(wf.entity) if wf.entity else None
    scope = Scope(scope.entities, scope.form_entities, scope.roles, scope.notifications, scope.registries, entity)
    errors: list[DefinitionError] = []

    def err(where: str, message: str) -> None:
        errors.append(DefinitionError(d.file, where, message))

    _check_ids(d, err)
    _check_graph(wf, d, err)
    _check_status_field(wf, scope, err)
    if wf.when:
        _check_expression(wf.when, "/when", scope, err)
    if wf.fallback_role and scope.roles is not None and wf.fallback_role not in scope.roles:
        err("/fallback_role", _unknown_role(wf.fallback_role, scope.roles))
    for i, item in enumerate(wf.who or ()):
        from keel.workflow.starters import item_errors

        for where, message in item_errors(item, scope):
            err(pointer("starts_on", "who", i) + where, message)
    for step in wf.steps.values():
        _check_step(step, scope, err)
    for state in wf.states.values():
        for t in state.next:
            _check_transition(t, scope, err)
        _check_actions(state.on_enter, state.pointer + "/on_enter", scope, err)
        if state.final and state.next:
            err(state.pointer + "/next", f"final state '{state.id}' cannot have transitions")
    for outcome, actions in wf.outcome_actions.items():
        _check_actions(actions, f"/on_{outcome}", scope, err)
    return errors


def _unknown_role(role: str, declared: frozenset[str]) -> str:
    return f"unknown role '{role}'; declare it in app.json roles (declared: {', '.join(sorted(declared))})"


def _check_ids(d: Definition, err) -> None:
    seen: dict[str, str] = {}
    for kind in ("steps", "states"):
        for i, node in enumerate(d.data.get(kind) or ()):
            where = pointer(kind, i, "id")
            if node["id"] in seen:
                err(where, f"duplicate id '{node['id']}' (also at {seen[node['id']]}): steps and states share ids")
            else:
                seen[node["id"]] = where


def _edges(wf: Workflow) -> dict[str, list[str]]:
    return {nid: [t.to for t in node.next] for nid, node in (*wf.steps.items(), *wf.states.items())}


def _check_graph(wf: Workflow, d: Definition, err) -> None:
    known = set(wf.steps) | set(wf.states)
    listing = ", ".join(sorted(known))
    if wf.node(wf.start) is None:
        err("/start", f"unknown state '{wf.start}' (states and steps: {listing})")
        return
    if wf.start in wf.states and wf.states[wf.start].final:
        err("/start", f"'{wf.start}' is a final state: a workflow must start at a step or a routing state")
    for node in (*wf.steps.values(), *wf.states.values()):
        for t in node.next:
            if t.to not in known:
                err(t.pointer + "/to", f"transition to unknown state '{t.to}' (states and steps: {listing})")
        if isinstance(node, State) and not node.final and not node.next:
            err(node.pointer, f"state '{node.id}' is neither final nor has transitions (`next`): a request "
                              f"entering it would be stuck")
    edges = _edges(wf)
    reachable, todo = {wf.start}, [wf.start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt in known and nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    for node in (*wf.steps.values(), *wf.states.values()):
        # Rejected and withdrawn states are entered by a rejection or a withdrawal, not by a transition.
        if node.id not in reachable and node.pointer and not (isinstance(node, State) and node.final
                                                              in ("rejected", "withdrawn")):
            err(node.pointer + "/id", f"unreachable: no transition from the start ('{wf.start}') leads to "
                                      f"'{node.id}'")
    for cycle in _closed_cycles(edges, wf):
        first = wf.node(cycle[0])
        err(first.pointer + "/next", "cycle without exit: " + " -> ".join(cycle + [cycle[0]])
            + " never reaches a final state")


def _closed_cycles(edges: Mapping[str, list[str]], wf: Workflow) -> list[list[str]]:
    """Strongly connected groups of states with a cycle and no transition leaving the group: a request
    that gets in never reaches a final state on the approval path (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(group)

    for v in edges:
        if v not in index:
            visit(v)
    order = list(edges)
    out = []
    for group in groups:
        members = set(group)
        looped = len(group) > 1 or group[0] in edges.get(group[0], ())
        leaves = any(w not in members for v in group for w in edges.get(v, ()))
        if looped and not leaves:
            out.append(sorted(group, key=order.index))
    return out


def _check_transition(t: Transition, scope: Scope, err) -> None:
    if t.when:
        _check_expression(t.when, t.pointer + "/when", scope, err)


def _check_expression(source: str, where: str, scope: Scope, err) -> None:
    try:
        expr = compile_expression(source)
    except ExpressionError as e:
        err(where, f"invalid expression: {e}")
        return
    if scope.entity is not None:
        known = {f.id for f in scope.entity.fields} | set(SYSTEM_COLUMNS)
        for name in sorted(expr.names - known):
            err(where, f"unknown name '{name}' in expression {source!r}; it may only name fields of "
                       f"entity '{scope.entity.id}'")


def _check_last_unconditional(nexts: tuple[Transition, ...], where: str, err) -> None:
    if nexts and nexts[-1].when:
        err(nexts[-1].pointer + "/when", "the last transition must have no condition, so a request always "
                                         "has somewhere to go; add a final {\"to\": ...} without `when`")


def _check_step(step: Step, scope: Scope, err) -> None:
    from keel.workflow.resolvers import rule_errors

    if step.quorum is not None and step.mode != "all":
        err(step.pointer + "/quorum", f"quorum applies to mode 'all' only (this step is '{step.mode}')")
    if "approve" not in step.actions:
        err(step.pointer + "/actions", "a step's actions must include 'approve'")
    for i, rule in enumerate(step.approvers):
        for where, message in rule_errors(rule, scope):
            err(step.pointer + pointer("approvers", i) + where, message)
    for t in step.next:
        _check_transition(t, scope, err)
    _check_last_unconditional(step.next, step.pointer, err)
    _check_actions(step.on_enter, step.pointer + "/on_enter", scope, err)
    _check_actions(step.on_complete, step.pointer + "/on_complete", scope, err)


def _check_actions(actions, where: str, scope: Scope, err) -> None:
    from keel.workflow.actions import action_errors

    for i, spec in enumerate(actions):
        for sub, message in action_errors(spec, scope):
            err(where + pointer(i) + sub, message)


def _check_status_field(wf: Workflow, scope: Scope, err) -> None:
    if not wf.status_field or scope.entity is None:
        return
    f = scope.entity.field(wf.status_field)
    if f is None:
        err("/status_field", f"no field '{wf.status_field}' in entity '{scope.entity.id}'")
    elif f.type != "select":
        err("/status_field", f"'{wf.status_field}' is a {f.type} field; the status field must be a select field")
    else:
        missing = [s for s in ("pending", "returned", "approved", "rejected", "withdrawn")
                   if s not in f.option_ids()]
        if missing:
            err("/status_field", f"select field '{f.id}' lacks the option(s) {', '.join(missing)} the engine "
                                 f"writes to it")
