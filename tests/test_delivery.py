"""Delivery to outside channels: group robots (DingTalk, WeCom, Feishu) against a loopback HTTP server
that is explicitly allowlisted, e-mail against a local aiosmtpd server; sent only after the inbox
transaction committed, failures recorded and retried, the inbox row never lost."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import socket

import pytest
import sqlalchemy as sa

from helpers_notify import GOAL_CHANGED, add_people, apply_bundle, bundle, count, engine_for
from helpers_registries import REGISTRIES
from keel.actor import SYSTEM
from keel.notify import delivery, inbox
from keel.storage.notify_tables import deliveries
from keel.storage.notify_tables import inbox as inbox_table
from loopback import LoopbackServer, Reply

ROBOT = {"type": "robot", "flavor": "dingtalk", "url_env": "KEEL_WEBHOOK_TEAM", "secret_env": "KEEL_WEBHOOK_TEAM_SECRET"}
RECORD = {"title": "{{7*7}}", "target": "¥800,000", "reason": "upsell"}


@pytest.fixture
def robot():
    with LoopbackServer() as server:
        server.reply("/robot/send", Reply(json={"errcode": 0, "errmsg": "ok"}))
        yield server


def make_world(url, channels, settings=None):
    engine = engine_for(url)
    apply_bundle(engine, bundle([{**GOAL_CHANGED, "channels": channels}], settings=settings))
    ids = add_people(engine, ("amy", {"locale": "en", "email": "amy@example.com"}),
                     ("bo", {"email": "bo@example.com"}), ("cy", {}))
    return engine, ids


def send(engine, recipients, **kw):
    with engine.begin() as conn:
        return inbox.send(conn, app="notes", template="goal_changed", recipients=recipients,
                          context={"record": RECORD}, link="/apps/notes/goal/7", actor=SYSTEM, **kw, registries=REGISTRIES)


def robot_settings(server, **extra):
    return {"KEEL_WEBHOOK_TEAM": server.url("/robot/send?access_token=t0ken"), "KEEL_WEBHOOK_TEAM_SECRET": "SEC",
            "KEEL_OUTBOUND_ALLOWLIST": server.allow, "KEEL_BASE_URL": "https://keel.example.com", **extra}


def test_a_dingtalk_robot_gets_one_signed_plain_text_post_per_message(db_url, robot):
    engine, ids = make_world(db_url, [ROBOT])
    send(engine, [ids["amy"], ids["bo"]])
    assert count(engine, deliveries) == 1  # a group gets the message once, whoever the recipients are
    counts = delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot))
    assert counts == {"sent": 1, "retry": 0, "failed": 0}
    [seen] = robot.seen("/robot/send")
    assert seen.query["access_token"] == "t0ken"
    expected = base64.b64encode(hmac.new(b"SEC", f"{seen.query['timestamp']}\nSEC".encode(), hashlib.sha256)
                                .digest()).decode()
    assert seen.query["sign"] == expected
    content = seen.json()["text"]["content"]
    assert seen.json()["msgtype"] == "text"
    assert content == ("目标已修订：{{7*7}}\n新目标 ¥800,000，原因：upsell\nhttps://keel.example.com/apps/notes/goal/7")
    # sent once: a second pass has nothing to do
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot))["sent"] == 0
    with engine.connect() as conn:
        row = conn.execute(sa.select(deliveries)).one()
    assert row.status == "sent" and row.attempts == 1 and "t0ken" not in str(row.target)
    engine.dispose()


@pytest.mark.parametrize("flavor", ["wecom", "feishu"])
def test_wecom_and_feishu_get_their_own_payload_shapes(sqlite_url, robot, flavor):
    channel = {"type": "robot", "flavor": flavor, "url_env": "KEEL_WEBHOOK_TEAM", "lang": "en"}
    if flavor == "feishu":
        channel["secret_env"] = "KEEL_WEBHOOK_TEAM_SECRET"
        robot.reply("/robot/send", Reply(json={"code": 0, "msg": "success"}))
    engine, ids = make_world(sqlite_url, [channel])
    send(engine, [ids["bo"]])
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot))["sent"] == 1
    body = robot.seen("/robot/send")[0].json()
    text = "Goal revised: {{7*7}}\nNew target ¥800,000, because: upsell\nhttps://keel.example.com/apps/notes/goal/7"
    if flavor == "wecom":
        assert body == {"msgtype": "text", "text": {"content": text}}
    else:
        sign = base64.b64encode(hmac.new(f"{body['timestamp']}\nSEC".encode(), b"", hashlib.sha256).digest()).decode()
        assert body == {"msg_type": "text", "content": {"text": text}, "timestamp": body["timestamp"], "sign": sign}
    engine.dispose()


def test_a_loopback_robot_that_is_not_allowlisted_is_refused_recorded_and_retried(sqlite_url, robot):
    engine, ids = make_world(sqlite_url, [ROBOT])
    [mid] = send(engine, [ids["bo"]])
    settings = robot_settings(robot, KEEL_OUTBOUND_ALLOWLIST="")
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=settings) == {"sent": 0, "retry": 1, "failed": 0}
    assert robot.seen("/robot/send") == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(deliveries)).one()
        assert conn.execute(sa.select(inbox_table.c.id)).scalars().all() == [mid]  # the message stays
    assert row.status == "pending" and "loopback" in row.last_error and "t0ken" not in row.last_error
    # not due again before its back-off; due after it, and then sent once allowlisted
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot))["sent"] == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot), now=later)["sent"] == 1
    engine.dispose()


def test_a_robot_that_refuses_is_retried_with_back_off_and_fails_for_good_after_the_last_attempt(sqlite_url, robot):
    robot.reply("/robot/send", Reply(json={"errcode": 310000, "errmsg": "keywords not in content"}))
    engine, ids = make_world(sqlite_url, [ROBOT])
    send(engine, [ids["bo"]])
    now = dt.datetime.now(dt.UTC)
    outcomes = []
    for _ in range(delivery.MAX_ATTEMPTS):
        counts = delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot), now=now)
        outcomes.append("failed" if counts["failed"] else "retry" if counts["retry"] else "none")
        now += dt.timedelta(hours=4)
    assert outcomes == ["retry"] * (delivery.MAX_ATTEMPTS - 1) + ["failed"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(deliveries)).one()
    assert row.status == "failed" and row.attempts == delivery.MAX_ATTEMPTS and "310000" in row.last_error
    assert count(engine, inbox_table) == 1
    engine.dispose()


def test_a_missing_webhook_variable_is_a_recorded_failure_not_a_crash(sqlite_url):
    engine, ids = make_world(sqlite_url, [ROBOT])
    send(engine, [ids["bo"]])
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings={})["retry"] == 1
    with engine.connect() as conn:
        assert "KEEL_WEBHOOK_TEAM" in conn.execute(sa.select(deliveries.c.last_error)).scalar()
    engine.dispose()


def test_nothing_is_queued_or_sent_when_the_senders_transaction_rolls_back(sqlite_url, robot):
    engine, ids = make_world(sqlite_url, [ROBOT])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        inbox.send(conn, app="notes", template="goal_changed", recipients=[ids["bo"]],
                   context={"record": RECORD}, link=None, actor=SYSTEM, registries=REGISTRIES)
        raise RuntimeError("the approval failed after the message was written")
    assert count(engine, deliveries) == 0 and count(engine, inbox_table) == 0
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot))["sent"] == 0
    assert robot.seen("/robot/send") == []
    engine.dispose()


def test_a_claimed_delivery_is_not_sent_by_a_second_sender_until_its_lease_expires(sqlite_url, robot):
    engine, ids = make_world(sqlite_url, [ROBOT])
    send(engine, [ids["bo"]])
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:  # a sender claimed it and then died before recording the result
        delivery_id = conn.execute(sa.select(deliveries.c.id)).scalar()
        assert delivery._claim(conn, delivery_id, now) is not None
        assert delivery._claim(conn, delivery_id, now) is None
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot), now=now)["sent"] == 0
    after_lease = now + dt.timedelta(seconds=delivery.LEASE_SECONDS + 1)
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=robot_settings(robot), now=after_lease)["sent"] == 1
    assert len(robot.seen("/robot/send")) == 1
    engine.dispose()


# ---- e-mail ----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    class Collect:
        def __init__(self):
            self.envelopes = []

        async def handle_DATA(self, server, session, envelope):
            self.envelopes.append(envelope)
            return "250 OK"

    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def test_email_goes_to_each_recipient_with_an_address_in_their_language(sqlite_url, smtp):
    from email import message_from_bytes, policy

    controller, handler = smtp
    engine, ids = make_world(sqlite_url, ["email"])
    send(engine, [ids["amy"], ids["bo"], ids["cy"]])  # cy has no address
    assert count(engine, deliveries) == 2
    settings = {"KEEL_SMTP_HOST": "127.0.0.1", "KEEL_SMTP_PORT": str(controller.port),
                "KEEL_SMTP_FROM": "keel@example.com", "KEEL_BASE_URL": "https://keel.example.com"}
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=settings) == {"sent": 2, "retry": 0, "failed": 0}
    mails = {e.rcpt_tos[0]: message_from_bytes(e.content, policy=policy.default) for e in handler.envelopes}
    assert set(mails) == {"amy@example.com", "bo@example.com"}
    assert mails["amy@example.com"]["Subject"] == "Goal revised: {{7*7}}"
    assert mails["bo@example.com"]["Subject"] == "目标已修订：{{7*7}}"
    body = mails["bo@example.com"].get_content()
    assert "新目标 ¥800,000，原因：upsell" in body and "https://keel.example.com/apps/notes/goal/7" in body
    engine.dispose()


def test_email_with_the_server_down_is_retried_and_the_app_setting_supplies_default_channels(sqlite_url):
    engine = engine_for(sqlite_url)
    no_channels = {k: v for k, v in GOAL_CHANGED.items() if k != "channels"}
    apply_bundle(engine, bundle([no_channels], settings={"notification_channels": ["email"]}))
    ids = add_people(engine, ("bo", {"email": "bo@example.com"}))
    send(engine, [ids["bo"]])
    settings = {"KEEL_SMTP_HOST": "127.0.0.1", "KEEL_SMTP_PORT": str(_free_port())}
    assert delivery.deliver_pending(engine, REGISTRIES.delivery_channels, settings=settings)["retry"] == 1
    with engine.connect() as conn:
        assert "ConnectionRefusedError" in conn.execute(sa.select(deliveries.c.last_error)).scalar()
    engine.dispose()


# ---- after the request -----------------------------------------------------------------------------

def test_a_request_that_sends_a_message_delivers_it_after_its_response(tmp_path, sqlite_url, robot, monkeypatch):
    import keel.web.inbox_pages
    from conftest import make_app

    for k, v in robot_settings(robot).items():
        monkeypatch.setenv(k, v)
    flask_app = make_app(tmp_path, sqlite_url)
    keel.web.inbox_pages.init_app(flask_app)
    engine = flask_app.extensions["keel"].engine
    apply_bundle(engine, bundle([{**GOAL_CHANGED, "channels": [ROBOT]}]))
    ids = add_people(engine, ("bo", {}))

    def approve():
        with engine.begin() as conn:
            inbox.send(conn, app="notes", template="goal_changed", recipients=[ids["bo"]],
                       context={"record": RECORD}, link=None, actor=SYSTEM, registries=REGISTRIES)
        assert robot.seen("/robot/send") == []  # not while the request is still running
        return "ok"

    approve.keel_public = True
    flask_app.add_url_rule("/test-approve", view_func=approve)
    r = flask_app.test_client().get("/test-approve")
    assert r.status_code == 200 and robot.seen("/robot/send") == []
    r.close()  # what a WSGI server does after sending the response
    assert len(robot.seen("/robot/send")) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(deliveries.c.status)).scalar() == "sent"
    engine.dispose()
