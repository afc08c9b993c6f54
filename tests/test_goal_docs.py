"""docs/goal-agility.md's REST sequence, run as it stands (bash, curl, jq) against a live demo server: the case
an integrator drives — the CRO files the revision of 2025-10-18, both lines approve, the goal changes, 李娜 is told."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from helpers_goal import Demo

DOC = Path(__file__).resolve().parent.parent / "docs" / "goal-agility.md"


def rest_sequence() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- rest-sequence:begin -->\s*```sh\n(.*?)```\s*<!-- rest-sequence:end -->", text, re.S)
    assert block, "docs/goal-agility.md lost its REST sequence block"
    return block.group(1)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq") and shutil.which("bash")),
                    reason="needs bash, curl and jq")
def test_the_documented_rest_sequence_runs_the_case(demo_app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, demo_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "KEEL": f"http://127.0.0.1:{server.server_port}"}
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", rest_sequence()], env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "核心指标: 新增客户数 ≥ 40 个 → 客户增购额 ≥ ¥800,000.00" in out
    assert "激励权重: 拓新占比70% → 增购占比60%" in out
    assert "资源倾斜: 线索分配优先 → 专属客户成功经理配置" in out
    assert "客户增购额 ≥ 800000" in out and "version 2" in out
    assert "目标修订已通过：销售部 Q4 核心目标（第 2 版）" in out
    assert '"decided": 1' in out
    demo = Demo(demo_app)
    assert demo.goal("李娜 Q4 个人目标")["target"] == Decimal("100800")
