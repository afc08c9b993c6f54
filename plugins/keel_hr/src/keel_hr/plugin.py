"""The hooks of the HR master-data plugin: one job type, `hr.sync_directory` (job.py)."""
from __future__ import annotations

from keel.plugins import hookimpl


@hookimpl
def keel_job_types():
    from keel_hr.job import SyncDirectory

    return [SyncDirectory()]
