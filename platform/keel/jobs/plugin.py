"""What the jobs engine brings to Keel, through the same hooks as any plugin: the `job` definition kind
(jobs/<id>.json, checked against the installed job types) and the built-in job types."""
from __future__ import annotations

from keel.definitions.kinds import DefinitionKind
from keel.definitions.schema_files import read_schema
from keel.hooks import hookimpl


def _check(d, ctx):
    from keel.jobs.definition import job_definition_errors

    return job_definition_errors(ctx, d)


@hookimpl
def keel_definition_kinds():
    return [DefinitionKind(name="job", folder="jobs", schema=read_schema(__file__), check=_check, label="jobs",
                           order=30)]


@hookimpl
def keel_job_types():
    from keel.jobs.builtin_types import Diagnostic, TouchRecords

    return [Diagnostic(), TouchRecords()]
