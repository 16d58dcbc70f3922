"""One message, four wire formats: generic JSON, Slack blocks, a Teams Adaptive Card, and a plain + HTML email."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from backend.notify.channels import EMAIL, SLACK, TEAMS, WEBHOOK

# Slack refuses a section text over 3000 characters and a message over 50 blocks.
_SLACK_TEXT_MAX = 2900
_SEVERITY_ICON = {"error": "🔴", "warning": "🟠", "info": "🔵"}
_TEAMS_COLOR = {"error": "attention", "warning": "warning", "info": "accent"}


@dataclass(frozen=True)
class Item:
    """One entry of a digest (an anomaly): a title, short lines, facts, and a link to act on it."""

    title: str
    lines: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    link: str | None = None
    link_label: str = "Open"


@dataclass(frozen=True)
class Message:
    """What an event says, independent of the channel. Stored as JSON with the event, so retries send the same."""

    kind: str
    title: str
    severity: str = "info"  # error / warning / info
    lines: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    link: str | None = None
    link_label: str = "Open in Costlake"
    footer: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable details for generic webhooks
    legacy: dict[str, Any] = field(default_factory=dict)  # top-level fields kept for old budget webhook receivers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Message:
        items = [
            Item(i["title"], list(i["lines"]), [tuple(f) for f in i["facts"]], i["link"], i["link_label"])
            for i in value.get("items", [])
        ]
        return cls(
            kind=value["kind"],
            title=value["title"],
            severity=value.get("severity", "info"),
            lines=list(value.get("lines", [])),
            facts=[tuple(f) for f in value.get("facts", [])],
            items=items,
            link=value.get("link"),
            link_label=value.get("link_label", "Open in Costlake"),
            footer=value.get("footer", ""),
            data=dict(value.get("data", {})),
            legacy=dict(value.get("legacy", {})),
        )

    def plain_text(self) -> str:
        """The whole message as plain text (email body, Slack's notification fallback)."""
        out = [self.title, ""]
        out += self.lines
        out += [f"{k}: {v}" for k, v in self.facts]
        for index, item in enumerate(self.items, 1):
            out += ["", f"{index}. {item.title}"]
            out += [f"   {line}" for line in item.lines]
            out += [f"   {k}: {v}" for k, v in item.facts]
            if item.link:
                out.append(f"   {item.link_label}: {item.link}")
        if self.link:
            out += ["", f"{self.link_label}: {self.link}"]
        if self.footer:
            out += ["", self.footer]
        return "\n".join(out).strip() + "\n"


def render_webhook(message: Message, *, event_id: int, dedup_key: str, created_at: str) -> dict[str, Any]:
    """Generic JSON: stable field names a receiver can route on, the text, the link and the event's data."""
    body = {
        **message.legacy,
        "source": "costlake",
        "event": message.kind,
        "event_id": event_id,
        "dedup_key": dedup_key,
        "created_at": created_at,
        "severity": message.severity,
        "title": message.title,
        "text": message.plain_text(),
        "url": message.link,
        "data": message.data,
    }
    if message.items:
        body["items"] = [
            {"title": i.title, "lines": i.lines, "facts": dict(i.facts), "url": i.link} for i in message.items
        ]
    return body


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = _SLACK_TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_slack(message: Message) -> dict[str, Any]:
    """Slack incoming-webhook payload: `text` (notification and fallback for Slack-compatible receivers) + blocks."""
    icon = _SEVERITY_ICON.get(message.severity, "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"{icon} {message.title}".strip(), 150)}}
    ]
    body = "\n".join(_slack_escape(line) for line in message.lines)
    facts = "\n".join(f"*{_slack_escape(k)}:* {_slack_escape(v)}" for k, v in message.facts)
    if text := "\n".join(part for part in (body, facts) if part):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}})
    for item in message.items[:40]:
        lines = [f"*{_slack_escape(item.title)}*"]
        lines += [_slack_escape(line) for line in item.lines]
        lines += [f"{_slack_escape(k)}: {_slack_escape(v)}" for k, v in item.facts]
        if item.link:
            lines.append(f"<{item.link}|{_slack_escape(item.link_label)}>")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines))}})
    if message.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": message.link_label}, "url": message.link}
                ],
            }
        )
    if message.footer:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(message.footer)}]})
    return {"text": _clip(f"{message.title}\n" + "\n".join(message.lines)), "blocks": blocks}


def render_teams(message: Message) -> dict[str, Any]:
    """A Teams (Workflows / Power Automate) webhook message carrying one Adaptive Card."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _TEAMS_COLOR.get(message.severity, "default"),
        }
    ]
    body += [{"type": "TextBlock", "text": line, "wrap": True} for line in message.lines]
    if message.facts:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in message.facts]})
    for item in message.items:
        container: list[dict[str, Any]] = [{"type": "TextBlock", "text": item.title, "weight": "Bolder", "wrap": True}]
        container += [{"type": "TextBlock", "text": line, "wrap": True, "spacing": "None"} for line in item.lines]
        if item.facts:
            container.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in item.facts]})
        if item.link:
            container.append(
                {
                    "type": "ActionSet",
                    "actions": [{"type": "Action.OpenUrl", "title": item.link_label, "url": item.link}],
                }
            )
        body.append({"type": "Container", "separator": True, "items": container})
    if message.footer:
        body.append({"type": "TextBlock", "text": message.footer, "isSubtle": True, "size": "Small", "wrap": True})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if message.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": message.link_label, "url": message.link}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def render_email(message: Message, *, sender: str, recipients: list[str], event_id: int) -> EmailMessage:
    """A multipart/alternative mail (plain text first, then HTML) with a unique Message-ID."""
    mail = EmailMessage()
    mail["Subject"] = f"[Costlake] {message.title}"
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(idstring=f"costlake-{event_id}")
    mail["X-Costlake-Event"] = message.kind
    mail.set_content(message.plain_text())
    mail.add_alternative(_html(message), subtype="html")
    return mail


def _link(url: str, label: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'


def _html(message: Message) -> str:
    esc = html.escape
    parts = [f"<h2>{esc(message.title)}</h2>"]
    parts += [f"<p>{esc(line)}</p>" for line in message.lines]
    if message.facts:
        rows = "".join(f"<tr><th align='left'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in message.facts)
        parts.append(f"<table>{rows}</table>")
    if message.items:
        entries = []
        for item in message.items:
            inner = f"<strong>{esc(item.title)}</strong>"
            inner += "".join(f"<br>{esc(line)}" for line in item.lines)
            inner += "".join(f"<br>{esc(k)}: {esc(v)}" for k, v in item.facts)
            if item.link:
                inner += f"<br>{_link(item.link, item.link_label)}"
            entries.append(f"<li>{inner}</li>")
        parts.append(f"<ol>{''.join(entries)}</ol>")
    if message.link:
        parts.append(f"<p>{_link(message.link, message.link_label)}</p>")
    if message.footer:
        parts.append(f"<p><small>{esc(message.footer)}</small></p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def render(kind: str, message: Message, *, event_id: int, dedup_key: str, created_at: str) -> dict[str, Any]:
    """The JSON body for a webhook-style channel kind."""
    if kind == SLACK:
        return render_slack(message)
    if kind == TEAMS:
        return render_teams(message)
    if kind == WEBHOOK:
        return render_webhook(message, event_id=event_id, dedup_key=dedup_key, created_at=created_at)
    raise ValueError(
        f"{kind!r} is not a webhook kind" + (" (email is rendered by render_email)" if kind == EMAIL else "")
    )
