"""Helpers for testing plugins (and Keel itself): a throwaway instance, a loopback HTTP server, running a
job and reading its run. A plugin's tests need no conftest of their own:

    from keel.testing import Instance, LoopbackServer, Reply

    def test_my_connector_fills_the_entity(tmp_path, monkeypatch):
        monkeypatch.setenv("CRM_TOKEN", "t0ken")
        with LoopbackServer() as crm, Instance(tmp_path, plugins=PLUGINS_FOLDER) as keel:
            crm.reply("/api/actuals", Reply(json={"items": [...], "next": None}))
            keel.apply(app_files(crm))        # connector URL and allowlist point at the loopback server
            run = keel.run_job("crm_actuals")
            assert run["status"] == "succeeded", run["error"]

This package sits at the top of Keel's layers (beside the CLI and the WSGI entry point): nothing in Keel
imports it. See docs/plugins.md, "Testing a plugin"."""
from __future__ import annotations

from keel.testing.instance import Instance
from keel.testing.loopback import LoopbackServer, Reply, Seen

__all__ = ["Instance", "LoopbackServer", "Reply", "Seen"]
