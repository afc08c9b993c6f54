"""Group-robot webhooks: the DingTalk, WeCom (企业微信) and Feishu (飞书) group chats these users live in.

A channel entry in a notification (or in the app's `notification_channels` setting):

    {"type": "robot", "flavor": "dingtalk" | "wecom" | "feishu",
     "url_env": "KEEL_WEBHOOK_SALES", "secret_env": "KEEL_WEBHOOK_SALES_SECRET", "lang": "zh"}

The webhook URL carries the robot's access token, so the definition names an environment variable,
never the URL; the name must start with KEEL_WEBHOOK_ so a definition cannot make Keel post another
secret (KEEL_SECRET_KEY, a database URL) somewhere. The request goes through the SSRF-safe
OutboundClient; KEEL_OUTBOUND_ALLOWLIST (comma-separated entries) admits private destinations.
Messages are sent as plain text, not markdown: a record value cannot turn into a link in the group."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from keel.notify.channels import message_text
from keel.notify.delivery import DeliveryChannel, DeliveryError
from keel.outbound import OutboundClient, OutboundError

FLAVORS = ("dingtalk", "wecom", "feishu")
ENV_NAME = re.compile(r"KEEL_WEBHOOK_[A-Z0-9_]{1,64}")
MAX_TEXT = 4000  # DingTalk and WeCom cut text messages at about 4,096 bytes' worth


def allowlist(settings: Mapping[str, str]) -> list[str]:
    raw = settings.get("KEEL_OUTBOUND_ALLOWLIST") or ""
    return [e.strip() for e in raw.split(",") if e.strip()]


def _hmac_b64(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def payload_for(flavor: str, subject: str, text: str, secret: str | None, now: float | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """(JSON body, extra query parameters) of one message for a robot flavour, signed when a secret is
    configured (DingTalk 加签: timestamp and sign in the query; Feishu 签名校验: in the body)."""
    content = f"{subject}\n{text}".strip()[:MAX_TEXT] if subject else text[:MAX_TEXT]
    now = time.time() if now is None else now
    if flavor == "dingtalk":
        query = {}
        if secret:
            ts = str(int(now * 1000))
            query = {"timestamp": ts, "sign": _hmac_b64(secret.encode(), f"{ts}\n{secret}".encode())}
        return {"msgtype": "text", "text": {"content": content}}, query
    if flavor == "wecom":
        return {"msgtype": "text", "text": {"content": content}}, {}
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": content}}
    if secret:
        ts = str(int(now))
        body.update(timestamp=ts, sign=_hmac_b64(f"{ts}\n{secret}".encode(), b""))
    return body, {}


def _accepted(flavor: str, status: int, raw: bytes) -> str | None:
    """Why a robot's answer is a failure (None: accepted). All three answer 200 with an error code in
    the body when they refuse (bad token, rate limit, keyword check)."""
    if not 200 <= status < 300:
        return f"HTTP {status}"
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        return None if flavor == "wecom" and not raw else "the robot's answer is not JSON"
    if not isinstance(answer, dict):
        return None
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    if code not in (0, None):
        return f"the robot refused the message: {code} {answer.get('errmsg') or answer.get('msg') or ''}".strip()
    return None


class RobotChannel(DeliveryChannel):
    name = "robot"

    def config_problem(self, config: Mapping[str, Any]) -> str | None:
        if config.get("flavor") not in FLAVORS:
            return f"a robot channel needs `flavor`: one of {', '.join(FLAVORS)}"
        for key in ("url_env", "secret_env"):
            value = config.get(key)
            if (key == "url_env" or value is not None) and not (isinstance(value, str) and ENV_NAME.fullmatch(value)):
                return f"`{key}` must name an environment variable starting with KEEL_WEBHOOK_"
        if config.get("lang", "zh") not in ("zh", "en"):
            return "`lang` must be zh or en"
        return None

    def targets(self, conn, config, recipients, inbox_ids):
        # One post to the group per message, whoever the recipients are.
        return [(None, {k: config[k] for k in ("flavor", "url_env", "secret_env", "lang") if k in config})]

    def send(self, target, payload, settings) -> None:
        url = settings.get(target["url_env"])
        if not url:
            raise DeliveryError(f"the environment variable {target['url_env']} (the robot's webhook URL) is not set")
        secret = settings.get(target["secret_env"]) if target.get("secret_env") else None
        subject, text = message_text(payload, target.get("lang", "zh"), settings)
        body, query = payload_for(target["flavor"], subject, text, secret)
        if query:
            url += ("&" if "?" in url else "?") + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        client = OutboundClient(allowlist=allowlist(settings), timeout=(5.0, 10.0), max_bytes=64 * 1024)
        try:
            resp = client.request("POST", url, json=body, secrets=[s for s in (url, secret) if s])
        except OutboundError as e:
            raise DeliveryError(f"robot webhook {target['url_env']}: {e.message}") from None
        problem = _accepted(target["flavor"], resp.status, resp.body)
        if problem:
            raise DeliveryError(f"robot webhook {target['url_env']}: {problem}")
