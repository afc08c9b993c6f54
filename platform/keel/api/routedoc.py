"""Route documentation from the routes themselves: every rule under /api/v1 in `app.url_map` is described
by its view function's docstring, so the OpenAPI document and the route table of docs/api.md come from
one source and cannot drift from the routes that exist.

The docstring convention (see docs/api.md, "Documenting a route"):

    Summary in one line.

    Free text: the description.

    Path:
        run_id: the run's id
    Query:
        status: pending (default), done or all
        limit (integer, required): at most this many
    Body:
        task_ids (array, required): ids of the tasks
    Responses:
        202: queued as a job run
        409: the run already finished

Defaults keep most docstrings to one line: path parameters come from the rule's converters, `200` is
assumed unless a 2xx is listed, `401` is always there (except on public views), `404` when the path has a
parameter and `422` when the route takes query arguments or a body."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

from flask import Flask

API_PREFIX = "/api/v1"
SECTIONS = ("Path", "Query", "Body", "Responses")
TYPES = ("string", "integer", "number", "boolean", "array", "object")
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")
_CONVERTER_TYPES = {"int": "integer", "float": "number"}
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_ITEM = re.compile(r"^(?P<name>[\w.\-]+)\s*(?:\((?P<spec>[^)]*)\))?\s*:\s*(?P<text>.*)$")
_STATUS = re.compile(r"^(?P<code>[1-5]\d\d)\s*:\s*(?P<text>.*)$")
DEFAULT_ERRORS = {401: "No valid bearer token", 404: "Not found, or not visible to the caller",
                  422: "Problems with the arguments, per field; nothing was written"}


class RouteDocError(ValueError):
    """A docstring that does not follow the convention (reported with the endpoint)."""


@dataclass
class Param:
    name: str
    description: str = ""
    type: str = "string"
    required: bool = False


@dataclass
class RouteDoc:
    rule: str                 # the Flask rule, e.g. /api/v1/jobs/runs/<int:run_id>
    path: str                 # the OpenAPI path below the server URL, e.g. /jobs/runs/{run_id}
    method: str               # upper case
    endpoint: str
    summary: str
    description: str = ""
    path_params: list[Param] = field(default_factory=list)
    query: list[Param] = field(default_factory=list)
    body: list[Param] = field(default_factory=list)
    responses: dict[int, str] = field(default_factory=dict)
    public: bool = False

    @property
    def tag(self) -> str:
        return self.path.strip("/").split("/")[0] or "meta"


def openapi_path(rule: str) -> str:
    """`/api/v1/jobs/runs/<int:run_id>` → `/jobs/runs/{run_id}`."""
    return _RULE_ARG.sub(lambda m: "{" + m.group(2) + "}", rule[len(API_PREFIX):]) or "/"


def _rule_params(rule: str) -> list[Param]:
    return [Param(m.group(2), type=_CONVERTER_TYPES.get(m.group(1) or "", "string"), required=True)
            for m in _RULE_ARG.finditer(rule)]


def parse_docstring(doc: str | None) -> tuple[str, str, dict[str, list[str]]]:
    """(summary, description, {section: [item lines]}) of a docstring; ("", "", {}) without one."""
    text = inspect.cleandoc(doc or "")
    if not text:
        return "", "", {}
    lines = text.splitlines()
    summary = lines[0].strip()
    description: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    item_indent = 0
    for line in lines[1:]:
        header = line.strip().rstrip(":")
        indent = len(line) - len(line.lstrip())
        if line.strip().endswith(":") and header in SECTIONS and not indent:
            current, item_indent = sections.setdefault(header, []), 0
        elif current is not None and (indent or not line.strip()):
            if line.strip():
                if current and indent > item_indent:  # deeper than the items: continues the one above
                    current[-1] += " " + line.strip()
                else:
                    current.append(line.strip())
                    item_indent = indent
        else:
            current = None
            description.append(line)
    return summary, "\n".join(description).strip(), sections


def _params(endpoint: str, section: str, items: list[str]) -> list[Param]:
    out = []
    for item in items:
        m = _ITEM.match(item)
        if not m:
            raise RouteDocError(f"{endpoint}: {section}: '{item}' is not 'name: text' or "
                                f"'name (type[, required]): text'")
        spec = [s.strip() for s in (m.group("spec") or "").split(",") if s.strip()]
        kind = next((s for s in spec if s in TYPES), "string")
        unknown = [s for s in spec if s not in TYPES and s != "required"]
        if unknown:
            raise RouteDocError(f"{endpoint}: {section}: unknown '{unknown[0]}' in '{item}' "
                                f"(types: {', '.join(TYPES)}; or 'required')")
        out.append(Param(m.group("name"), m.group("text").strip(), kind, "required" in spec))
    return out


def _responses(endpoint: str, items: list[str]) -> dict[int, str]:
    out = {}
    for item in items:
        m = _STATUS.match(item)
        if not m:
            raise RouteDocError(f"{endpoint}: Responses: '{item}' is not 'status: text'")
        out[int(m.group("code"))] = m.group("text").strip()
    return out


def route_doc(rule: str, method: str, endpoint: str, view) -> RouteDoc:
    summary, description, sections = parse_docstring(getattr(view, "__doc__", None))
    doc = RouteDoc(rule=rule, path=openapi_path(rule), method=method, endpoint=endpoint, summary=summary,
                   description=description, public=bool(getattr(view, "keel_public", False)))
    described = {p.name: p for p in _params(endpoint, "Path", sections.get("Path", []))}
    doc.path_params = []
    for p in _rule_params(rule):
        if p.name in described:
            p.description = described.pop(p.name).description
        doc.path_params.append(p)
    if described:
        raise RouteDocError(f"{endpoint}: Path: '{next(iter(described))}' is not a parameter of {rule}")
    doc.query = _params(endpoint, "Query", sections.get("Query", []))
    doc.body = _params(endpoint, "Body", sections.get("Body", []))
    responses = _responses(endpoint, sections.get("Responses", []))
    if not any(200 <= c < 300 for c in responses):
        responses[200] = "OK"
    defaults = {} if doc.public else {401: DEFAULT_ERRORS[401]}
    if doc.path_params:
        defaults[404] = DEFAULT_ERRORS[404]
    if doc.query or doc.body:
        defaults[422] = DEFAULT_ERRORS[422]
    doc.responses = dict(sorted({**defaults, **responses}.items()))
    return doc


def api_rules(app: Flask):
    """(rule, method, endpoint, view) of every rule under /api/v1, in path then method order."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule != API_PREFIX and not rule.rule.startswith(API_PREFIX + "/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}, key=_method_key):
            out.append((rule.rule, method, rule.endpoint, app.view_functions[rule.endpoint]))
    return sorted(out, key=lambda r: (openapi_path(r[0]), _method_key(r[1])))


def _method_key(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def api_routes(app: Flask) -> list[RouteDoc]:
    return [route_doc(*r) for r in api_rules(app)]


def undocumented(app: Flask) -> list[str]:
    """`METHOD rule (endpoint)` of every /api/v1 route whose view has no docstring summary."""
    return [f"{method} {rule} ({endpoint})" for rule, method, endpoint, view in api_rules(app)
            if not parse_docstring(getattr(view, "__doc__", None))[0]]


# ---- OpenAPI -------------------------------------------------------------------------------------

def _schema(p: Param) -> dict:
    return {"type": p.type} if p.type != "array" else {"type": "array", "items": {}}


def _parameter(p: Param, where: str) -> dict:
    out = {"name": p.name, "in": where, "required": p.required or where == "path", "schema": _schema(p)}
    if p.description:
        out["description"] = p.description
    return out


def operation(doc: RouteDoc, error_refs: dict[int, str]) -> dict:
    """The OpenAPI operation of one route. `error_refs` maps a status to a shared response component
    (`#/components/responses/...`), used when the docstring gives no text of its own for it."""
    op: dict = {"operationId": f"{doc.endpoint}.{doc.method.lower()}", "tags": [doc.tag], "summary": doc.summary}
    if doc.description:
        op["description"] = doc.description
    params = [_parameter(p, "path") for p in doc.path_params] + [_parameter(p, "query") for p in doc.query]
    if params:
        op["parameters"] = params
    if doc.body:
        schema = {"type": "object", "properties": {p.name: {**_schema(p), **(
            {"description": p.description} if p.description else {})} for p in doc.body}}
        required = [p.name for p in doc.body if p.required]
        if required:
            schema["required"] = required
        op["requestBody"] = {"required": bool(required),
                             "content": {"application/json": {"schema": schema}}}
    responses = {}
    for code, text in doc.responses.items():
        if code in error_refs and text == DEFAULT_ERRORS.get(code):
            responses[str(code)] = {"$ref": f"#/components/responses/{error_refs[code]}"}
        elif code >= 400 and code in error_refs:
            responses[str(code)] = {"description": text, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error" if code != 422
                           else "#/components/schemas/ValidationErrors"}}}}
        else:
            responses[str(code)] = {"description": text}
    op["responses"] = responses
    if doc.public:
        op["security"] = []
    return op


# ---- docs/api.md ---------------------------------------------------------------------------------

BEGIN = "<!-- routes:begin (generated by `keel api routes --update docs/api.md`; do not edit) -->"
END = "<!-- routes:end -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown(paths: dict) -> str:
    """The route table of docs/api.md from OpenAPI paths (the routes' part of the document): one table
    per tag, one row per operation with its parameters and answers."""
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path, item in paths.items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method == "parameters":
                continue
            by_tag.setdefault(op.get("tags", ["meta"])[0], []).append((path, method, {**op, "_shared": shared}))
    out = []
    for tag in sorted(by_tag):
        out += [f"### {tag}", "", "| route | what it does | arguments | answers |", "| --- | --- | --- | --- |"]
        for path, method, op in sorted(by_tag[tag], key=lambda r: (r[0], _method_key(r[1].upper()))):
            args = []
            for p in op["_shared"] + op.get("parameters", []):
                if "$ref" in p:
                    args.append(f"`{p['$ref'].rsplit('/', 1)[-1]}`")
                elif p["in"] != "path":
                    args.append(f"`{p['name']}`" + ("*" if p.get("required") else ""))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "properties" in body:
                required = set(body.get("required", []))
                args += [f"body `{n}`" + ("*" if n in required else "") for n in body["properties"]]
            elif "$ref" in body:
                args.append("body " + body["$ref"].rsplit("/", 1)[-1])
            answers = ", ".join(sorted(op.get("responses", {})))
            summary = op.get("summary", "") + (" *(no sign-in)*" if op.get("security") == [] else "")
            out.append(f"| `{method.upper()} {path}` | {_cell(summary)} | {_cell(', '.join(args)) or '—'} "
                       f"| {answers} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_markdown(text: str, generated: str) -> str:
    """`text` with the part between the markers replaced by `generated` (the markers appended at the
    end when missing)."""
    block = f"{BEGIN}\n\n{generated}\n{END}"
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1 or end < start:
        return text.rstrip() + "\n\n" + block + "\n"
    return text[:start] + block + text[end + len(END):]


def generated_section(text: str) -> str | None:
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1:
        return None
    return text[start + len(BEGIN):end].strip() + "\n"
