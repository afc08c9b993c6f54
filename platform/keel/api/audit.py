"""The audit trail over the API, filtered by what the caller may see (`audit.query.list_audit`)."""
from __future__ import annotations

from flask import request

from keel.api import bp
from keel.api.common import actor, int_arg, json_response, runtime
from keel.audit.query import list_audit as query_audit


@bp.get("/audit")
def list_audit():
    """Audit events the caller may see (every event for administrators), newest first.

    Query:
        app: app id
        entity: entity id
        record (integer): record id
        page (integer): page number, from 1
        per_page (integer): events per page
    """
    args = request.args
    kwargs = {k: v for k, v in {
        "app": args.get("app") or None, "entity": args.get("entity") or None,
        "record": int_arg("record", args.get("record")), "page": int_arg("page", args.get("page")),
        "per_page": int_arg("per_page", args.get("per_page"))}.items() if v is not None}
    rt = runtime()
    with rt.engine.connect() as conn:
        result = query_audit(conn, rt, actor(), **kwargs)
    return json_response({"items": result.items, "total": result.total, "page": result.page,
                          "per_page": result.per_page})
