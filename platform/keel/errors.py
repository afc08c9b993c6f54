"""Errors as values: a place and a message, collected and carried to the edge where the CLI, a page
or the API formats them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    """A translatable message: an English msgid (the gettext key) and its parameters."""

    msgid: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, msgid: str, **params: Any) -> Message:
        return cls(msgid, tuple(sorted(params.items())))

    def render(self) -> str:
        from keel.i18n import translate

        return translate(self.msgid, **dict(self.params))

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class LabelMessage(Message):
    """Text a definition wrote in both languages (a rule's message), not a gettext msgid: `msgid` holds
    the English, the `zh` parameter the Chinese."""

    @classmethod
    def of_label(cls, zh: str, en: str) -> LabelMessage:
        return cls(en, (("zh", zh),))

    def render(self) -> str:
        from keel.i18n import current_lang

        return self.msgid if current_lang() == "en" else dict(self.params).get("zh", self.msgid)


class KeelError(Exception):
    """Base of every error Keel reports to a user (never shown with a traceback). `status` is the HTTP
    status the API and pages answer it with; the edges read it, the parts below never speak HTTP."""

    status = 400
    # Whether trying the same thing again later could succeed: True (a timeout, a 5xx, a 429, a lost
    # connection), False (a wrong token, a missing secret, bad data or config), None (not said; see
    # `keel.jobs.types.retry_can_help`, which decides what a job retries).
    retryable: bool | None = None


class ConfigError(KeelError):
    """A setting Keel cannot start with; the message names the variable and what it accepts."""


@dataclass
class FieldErrors(KeelError):
    """Per-field validation errors of one write; `errors` maps field id -> messages.
    The key "_record" holds errors about the record as a whole."""

    errors: dict[str, list[Message]] = field(default_factory=dict)
    status = 422

    def add(self, field_id: str, msgid: str, **params: Any) -> None:
        self.errors.setdefault(field_id, []).append(Message.of(msgid, **params))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def rendered(self) -> dict[str, list[str]]:
        return {k: [m.render() for m in v] for k, v in self.errors.items()}

    def __str__(self) -> str:
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in self.rendered().items())


class NotFound(KeelError):
    status = 404


class PermissionDenied(KeelError):
    status = 403


class Conflict(KeelError):
    """A write based on a stale version, or a transition that is no longer possible."""

    status = 409
    retryable = True  # someone else wrote first: the next attempt reads their version
