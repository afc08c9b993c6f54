"""E-mail to each recipient that has an address, in the recipient's language, as plain text.

    {"type": "email"}

The SMTP server comes from the environment: KEEL_SMTP_HOST, KEEL_SMTP_PORT (25), KEEL_SMTP_FROM,
KEEL_SMTP_STARTTLS=1, KEEL_SMTP_USER / KEEL_SMTP_PASSWORD."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formataddr

from keel.notify.channels import message_text
from keel.notify.delivery import DeliveryChannel, DeliveryError


class EmailChannel(DeliveryChannel):
    name = "email"

    def config_problem(self, config) -> str | None:
        unknown = set(config) - {"type", "lang"}
        if unknown:
            return f"an email channel takes only `type` and `lang` (not {', '.join(sorted(unknown))})"
        if config.get("lang") not in (None, "zh", "en"):
            return "`lang` must be zh or en"
        return None

    def targets(self, conn, config, recipients, inbox_ids):
        out = []
        for user in recipients:
            if user.email and user.id in inbox_ids:
                out.append((inbox_ids[user.id], {"to": user.email, "name": user.display_name,
                                                 "lang": config.get("lang") or user.locale or "zh"}))
        return out

    def send(self, target, payload, settings) -> None:
        host = settings.get("KEEL_SMTP_HOST")
        if not host:
            raise DeliveryError("no SMTP server is configured (KEEL_SMTP_HOST)")
        try:
            port = int(settings.get("KEEL_SMTP_PORT") or 25)
        except ValueError:
            raise DeliveryError("KEEL_SMTP_PORT is not a number", permanent=True) from None
        subject, text = message_text(payload, target.get("lang"), settings)
        msg = EmailMessage()
        msg["From"] = settings.get("KEEL_SMTP_FROM") or f"keel@{host}"
        msg["To"] = formataddr((target.get("name") or "", target["to"]))
        msg["Subject"] = subject  # one line: newlines from data were removed when it was rendered
        msg.set_content(text or subject)
        try:
            with smtplib.SMTP(host, port, timeout=15) as smtp:
                if settings.get("KEEL_SMTP_STARTTLS") == "1":
                    smtp.starttls(context=ssl.create_default_context())
                if settings.get("KEEL_SMTP_USER"):
                    smtp.login(settings["KEEL_SMTP_USER"], settings.get("KEEL_SMTP_PASSWORD") or "")
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"the mail server refused {target['to']}: {e.recipients}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryError(f"sending mail via {host}:{port} failed: {type(e).__name__}: {e}") from None
