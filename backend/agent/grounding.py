"""What a model wrote instead of calling a tool (SQL or a tool call in prose), and the notes that say which path answered."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Which path produced an answer (AgentAnswer.answered_by, and `via` of each audited tool call).
MODEL = "model"  # the model called the tools
MODEL_SQL = "model-sql"  # the model wrote SQL in prose; it went through the guard and the read-only tool
MODEL_TEXT_CALL = "model-text-call"  # the model wrote a tool call as text; the tool ran
RULES = "rules"  # the rule-based planner answered the question
NO_QUERY = "no-query"  # nothing ran

_FENCE = re.compile(r"```[ \t]*([A-Za-z]*)[ \t]*\r?\n(.*?)```", re.S)
# A bare statement in prose: SELECT ... FROM, or WITH name AS (, up to a semicolon, a blank line or the end.
_BARE = re.compile(r"(?is)(?<![\w])((?:select\s.+?\bfrom\b|with\s+\w+\s+as\s*\().*?)(?:;|\n[ \t]*\n|\Z)")
_STARTS_SQL = re.compile(r"(?is)^\s*(?:select|with)\b")
_SQL_LANGS = {"", "sql", "postgresql", "postgres", "pgsql", "psql"}
_FIGURE = re.compile(r"\d")


@dataclass(frozen=True)
class TextCall:
    name: str
    args: dict[str, Any]


def extract_sql(text: str) -> str | None:
    """The first SELECT the model wrote in its text (a fenced block first, then a bare statement), else None."""
    if not text:
        return None
    for lang, body in _FENCE.findall(text):
        if lang.lower() in _SQL_LANGS and _STARTS_SQL.match(body):
            return body.strip().rstrip(";").strip()
    unfenced = _FENCE.sub(" ", text)
    if m := _BARE.search(unfenced):
        return m.group(1).strip().rstrip(";").strip()
    return None


def extract_text_call(text: str, tool_names: Iterable[str]) -> TextCall | None:
    """A tool call printed as JSON ({"name": ..., "arguments": {...}}) naming one of the tools, else None.

    Small models behind llama.cpp or Ollama often print their call (<tool_call>{...}</tool_call>, or bare
    JSON) instead of sending it as a tool call."""
    names = set(tool_names)
    if not text or not any(name in text for name in names):
        return None
    for candidate in _json_candidates(text):
        if not isinstance(candidate, dict):
            continue
        call = candidate.get("function") if isinstance(candidate.get("function"), dict) else candidate
        name = call.get("name") or call.get("tool")
        args = call.get("arguments", call.get("parameters", call.get("args", {})))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                continue
        if name in names and isinstance(args, dict):
            return TextCall(name, args)
    return None


def _json_candidates(text: str) -> Iterable[Any]:
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        yield value


def has_figures(text: str) -> bool:
    """Whether a text states numbers; a reply that no query backs may only pass when it has none."""
    return bool(_FIGURE.search(text or ""))


# Amounts as a model writes them: 1,234.56 or 1234.56 or 62434; not parts of dates, ids or names.
_AMOUNT = re.compile(r"(?<![\w.,/:-])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\w/:-]|\.\d)")


def _amounts(text: str) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(1).replace(",", ""))) for m in _AMOUNT.finditer(text or "")]


def unbacked_figures(text: str, sources: Iterable[str], *, min_value: float = 100.0) -> list[str]:
    """Amounts in an answer that no tool result holds (to half a percent, so rounding passes).

    Small numbers (counts, percentages, "top 5") are left alone: the check is for invented money."""
    known = [value for source in sources for _, value in _amounts(source)]
    unbacked = []
    for raw, value in _amounts(text):
        if value < min_value or (1990 <= value <= 2100 and "," not in raw and "." not in raw):
            continue  # a year, or too small to be an amount worth checking
        if not any(abs(value - k) <= max(0.01, 0.005 * abs(k)) for k in known):
            unbacked.append(raw)
    return list(dict.fromkeys(unbacked))


def note(path: str, *, reason: str = "", failed: bool = False) -> str:
    """The line under an answer that tells the user where it came from (empty when the model's tools answered).

    `reason` says why the model's own answer was not used; `failed` means its endpoint gave no answer at all."""
    why = f" ({reason})" if reason else ""
    if path == MODEL_SQL:
        return (
            "Note: the model wrote SQL instead of calling a tool; that SQL was checked by the read-only guard and "
            "run (shown below), and the figures are its result."
        )
    if path == MODEL_TEXT_CALL:
        return "Note: the model wrote its tool call as text instead of making it; the tool ran and the figures are its result."
    if path == RULES:
        if failed:
            return f"Note: {reason}; the built-in rule-based planner answered with the query shown below."
        return (
            f"Note: the model's answer was not backed by a query{why}, so it is not shown; the built-in "
            "rule-based planner answered with the query shown below."
        )
    if path == NO_QUERY:
        return f"Note: no query ran for this answer{why}."
    return ""


def unbacked_note(figures: list[str]) -> str:
    return (
        f"Note: {', '.join(figures[:5])} {'is' if len(figures) == 1 else 'are'} not in any query result below "
        "(the model may have computed or invented it); check against the tables."
    )
