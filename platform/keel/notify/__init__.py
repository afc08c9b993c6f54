"""Notifications: the inbox (站内信), rendering notification definitions, and delivery to outside channels.

    render.py      notification templates in Jinja's immutable sandbox, once per language
    inbox.py       send / list / mark read; the messages live in keel_inbox
    delivery.py    delivery channels and the queue of deliveries (keel_deliveries), sent after commit
    channels/      the built-in channels: group robots (DingTalk, WeCom, Feishu) and e-mail
    plugin.py      what notify registers through the hooks: the `notification` kind and its channels

The pages and API (inbox, unread count, sending a request's deliveries after its response) live in
keel.web and keel.api, which build on this package."""
from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping
from typing import Any


def channel_settings(config: Mapping[str, Any]) -> ChainMap:
    """Configuration for channels: string settings of the app's config over the environment
    (KEEL_SMTP_*, webhook URLs)."""
    return ChainMap({k: v for k, v in config.items() if isinstance(v, str)}, os.environ)
