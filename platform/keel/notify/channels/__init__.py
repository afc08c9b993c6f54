"""The delivery channels Keel ships: group robots (DingTalk, WeCom, Feishu) and e-mail. They register
through the `keel_delivery_channels` hook (notify/plugin.py), exactly like a plugin's channel would."""
from __future__ import annotations

from keel.notify.delivery import DeliveryChannel


def builtin_channels() -> list[DeliveryChannel]:
    from keel.notify.channels.email import EmailChannel
    from keel.notify.channels.robot import RobotChannel

    return [RobotChannel(), EmailChannel()]


def message_text(payload, lang: str | None, settings) -> tuple[str, str]:
    """(subject, text) of a stored payload in `lang`, the link made absolute with KEEL_BASE_URL.
    Converting the stored HTML-safe body to text renders nothing: `{{7*7}}` stays literal."""
    from keel.notify.render import pick, plain_text

    subject = pick(payload.get("subject"), lang)
    text = plain_text(pick(payload.get("body"), lang))
    link = payload.get("link")
    if link:
        base = (settings.get("KEEL_BASE_URL") or "").rstrip("/")
        if link.startswith("/") and base:
            link = base + link
        text = f"{text}\n{link}" if text else link
    return subject, text
