"""A rule-based chat model for when no LLM is configured: maps common FinOps questions to the same tool calls an LLM would make."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from backend.agent.periods import NUMBER_WORDS, find_day, find_periods

log = logging.getLogger(__name__)

EXAMPLES = (
    "Top 5 services by cost last month",
    "How much did we spend this month?",
    "Daily cost trend for the last 30 days",
    "Why did Storage cost jump last Tuesday?",
    "Compare this month with last month by service",
    "What will we spend by the end of the month?",
    "Are we within budget?",
    "What share of cost is untagged for the owner tag?",
    "Cost by resource group in the Production subscription in March",
    "How many anomalies were detected this month?",
    "Average daily cost last month",
    "Cost by cloud provider this year",
    "What did we save last month, and how well are our reservations used?",
    "Which resources look wasted (unattached disks, idle IPs, stopped VMs)?",
    "SELECT ... (a read-only query over the tables listed by 'what tables can I query?')",
)
HELP = (
    "I am the built-in rule-based assistant (no LLM is configured), so I understand common FinOps questions "
    "only. Examples of what I can answer:\n" + "\n".join(f"- {e}" for e in EXAMPLES)
)


@dataclass(frozen=True)
class Vocabulary:
    """What the mart's members are called, to link words in a question to dimensions. Loaded from the mart."""

    as_of: dt.date | None
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower label -> (dimension, label)
    tag_keys: tuple[str, ...] = ()
    budgets: tuple[str, ...] = ()


# Dimension words, most specific first; each maps to a tool dimension name.
_DIMENSION_WORDS: tuple[tuple[str, str], ...] = (
    (r"charge (?:categor(?:y|ies)|types?)", "charge_category"),
    (r"service providers?|vendors?|publishers?", "service_provider"),
    # "the cloud cost us" is not a split by cloud; "by cloud", "which cloud" are.
    (r"cloud providers?|providers?|clouds|(?<=by )cloud|(?<=per )cloud|(?<=each )cloud|(?<=which )cloud", "provider"),
    (r"service categor(?:y|ies)|categor(?:y|ies)", "service_category"),
    (r"resource ?groups?|\brgs?\b", "resource_group"),
    (r"subscriptions?|\bsubs\b", "subscription"),
    (r"services?|products?", "service"),
    (r"resources?", "resource"),
    (r"regions?|locations?", "region"),
    (r"meters?", "meter"),
    (r"pricing models?|commitment types?", "pricing_model"),
    (r"billing accounts?", "billing_account"),
)
# A grouping word right after one of these is what the user wants results per.
_GROUPING_CUE = r"(?:by|per|each|every|which|what|top\s+\w+|most expensive|biggest|largest|across|all)\s+(?:the\s+)?"
_MEMBER_PRIORITY = {"service": 0, "subscription": 1, "resource_group": 2, "resource": 3, "region": 4, "provider": 5}
# What people call a member besides its name in the mart; used only when the mart has that member.
_SYNONYMS: dict[str, str] = {
    "vms": "virtual machines",
    "vm": "virtual machines",
    "virtual machine": "virtual machines",
    "aks": "azure kubernetes service",
    "kubernetes": "azure kubernetes service",
    "k8s": "azure kubernetes service",
    "sql database": "azure sql database",
    "sql databases": "azure sql database",
    "azure sql": "azure sql database",
    "sql": "azure sql database",
    "egress": "bandwidth",
    "data transfer": "bandwidth",
    "log analytics": "azure monitor",
    "monitoring": "azure monitor",
    "blob storage": "storage",
    "storage accounts": "storage",
    "prod": "production",
    "dev": "development",
    "azure": "microsoft",
}
# Superlatives that ask for the top of a ranking ("the most expensive", "spend the most on", "peak").
_SUPERLATIVE = (
    r"most expensive|costliest|priciest|biggest|largest|highest|greatest|\bmost\b|\btop\b|\bpeak\b|\bmax(?:imum)?\b"
)
_TIME_UNITS = {"day": "day", "days": "day", "date": "day", "dates": "day", "week": "week", "weeks": "week"}
_TIME_UNITS |= {"month": "month", "months": "month"}
_PLURAL_RANKED = (
    r"\b(?:services|subscriptions|groups|rgs|resources|regions|locations|meters|providers|clouds|vendors|accounts|"
    r"categories|models|days|dates|weeks|months|anomalies|spikes)\b"
)
# Period and grain phrases ("last 30 days", "per day", "month to date"), whose unit words do not name a ranking.
_PERIOD_PHRASES = re.compile(
    r"\b(?:this|last|previous|prior|current|next|past)\s+(?:\d+\s+|[a-z]+\s+)?(?:days?|weeks?|months?|quarters?|years?)\b"
    r"|\b(?:month|week|year|quarter)[- ]to[- ]date\b|\b(?:per|a|each|every|by)\s+(?:day|week|month)\b"
    r"|\bthe\s+(?:day|week|month)\s+before\b"
)


def _without_periods(q: str) -> str:
    return _PERIOD_PHRASES.sub(" ", q)


def _number(word: str) -> int | None:
    return int(word) if word.isdigit() else NUMBER_WORDS.get(word)


@dataclass
class Plan:
    """A question mapped to tool calls, or a text answer when it cannot be."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: str = ""


class QuestionParser:
    """Pure question -> Plan mapping (unit-testable without a model or a database)."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocab = vocabulary
        self.as_of = vocabulary.as_of or dt.date.today()

    # --- entity extraction -----------------------------------------------------------
    def members(self, q: str) -> list[tuple[int, str, str]]:
        """(position, dimension, label) of mart members named in the question; longest names win."""
        return [(s, d, label) for s, _, d, label in self.member_spans(q)]

    def member_spans(self, q: str) -> list[tuple[int, int, str, str]]:
        """(start, end, dimension, label) of the members named in the question, by their name or a synonym."""
        found: list[tuple[int, int, str, str]] = []
        for phrase, (dimension, label) in sorted(self.vocab.members.items(), key=lambda kv: -len(kv[0])):
            if len(phrase) < 3:
                continue
            for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", q):
                if any(s < m.end() and m.start() < e for s, e, _, _ in found):
                    continue
                found.append((m.start(), m.end(), dimension, label))
        for phrase, target in sorted(_SYNONYMS.items(), key=lambda kv: -len(kv[0])):
            if target not in self.vocab.members:
                continue
            dimension, label = self.vocab.members[target]
            if phrase in ("prod", "dev") and re.search(r"\btags?\b|\benv\b", q):
                continue  # there they are tag values (env=prod), not the subscriptions
            for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", q):
                if any(s < m.end() and m.start() < e for s, e, _, _ in found):
                    continue
                found.append((m.start(), m.end(), dimension, label))
        found.sort(key=lambda f: (f[0], _MEMBER_PRIORITY.get(f[2], 9)))
        return found

    def tag_key(self, q: str) -> str | None:
        for key in sorted(self.vocab.tag_keys, key=len, reverse=True):
            spoken = re.escape(key).replace("_", "[ _-]?")
            if re.search(rf"\b{spoken}\b\s+tags?|\btags?\s+(?:key\s+)?['\"]?{spoken}\b|tag:{spoken}\b", q):
                return key
        for key in self.vocab.tag_keys:
            if re.search(rf"\b{re.escape(key).replace('_', '[ _-]?')}\b", q):
                return key
        return None

    def dimension(
        self, q: str, *, masked: Sequence[tuple[int, int]] = (), named: Sequence[tuple[int, int, str, str]] = ()
    ) -> str | None:
        """The dimension to group by: one after a grouping cue wins, else the first dimension word."""
        tag = self.tag_key(q)
        if tag and re.search(r"\btags?\b", q) and not re.search(r"untagged|tag coverage|without", q):
            return f"tag:{tag}"
        hits: list[tuple[int, bool, str]] = []
        spans = list(masked)
        for pattern, name in _DIMENSION_WORDS:  # most specific first: "resource group" before "resource"
            for m in re.finditer(rf"(?<![\w-])(?:{pattern})(?![\w-])", q):
                if any(s < m.end() and m.start() < e for s, e in spans):
                    continue
                spans.append(m.span())
                # "the Production subscription": the word names the member's kind, it is not a group-by.
                before = len(q[: m.start()].rstrip())
                after = len(q) - len(q[m.end() :].lstrip())
                if any(d == name and end == before for _, end, d, _ in named):
                    continue
                # "resource group rg-web": the word introduces the member it names.
                if any(d == name and start == after for start, _, d, _ in named):
                    continue
                cued = bool(re.search(rf"{_GROUPING_CUE}(?:\d+\s+)?$", q[: m.start()]))
                hits.append((m.start(), cued, name))
        if not hits:
            return None
        pool = sorted(h for h in hits if h[1]) or sorted(hits)
        return pool[0][2]

    def top_n(self, q: str, default: int) -> int:
        if (m := re.search(r"\btop\s+(\d+|[a-z]+)\b", q)) and (n := _number(m.group(1))):
            return n
        m = re.search(rf"\b(\d+|[a-z]+)\s+(?:{_SUPERLATIVE})", q)
        if m and (n := _number(m.group(1))):
            return n
        if re.search(_SUPERLATIVE, q):
            # "the most expensive service" is one; "the most expensive services" a short list.
            return 5 if re.search(_PLURAL_RANKED, _without_periods(q)) else 1
        return default

    def ranked_time_unit(self, q: str) -> str | None:
        """'day', 'week' or 'month' when the question ranks them ("the most expensive day", "which month...")."""
        rest = _without_periods(q)
        if not re.search(_SUPERLATIVE, rest) or re.search(r"\b(?:daily|weekly|monthly|trend|over time)\b", rest):
            return None
        if m := re.search(r"\b(days?|dates?|weeks?|months?)\b", rest):
            return _TIME_UNITS[m.group(1)]
        return None

    def metric(self, q: str) -> str:
        return "amortized" if re.search(r"amorti[sz]ed|effective cost", q) else "actual"

    # --- intents -------------------------------------------------------------------
    def plan(self, question: str) -> Plan:
        q = " ".join(question.lower().split())
        if not q or re.fullmatch(r"(hi|hello|hey|help|\?|what can you do\??)[!. ]*", q):
            return Plan(text=HELP)
        if re.match(
            r"(?:please\s+)?(?:delete|drop|truncate|update|insert|alter|create|grant|modify|remove|change)\b", q
        ):
            return Plan(text="I only read cost data: I cannot change, delete or create anything. " + HELP)
        stripped = question.strip().strip("`").removeprefix("sql").strip()
        if re.match(r"(?is)^\s*(select|with)\b", stripped):
            return Plan(calls=[("run_sql", {"sql": stripped})])
        if re.search(r"\b(what|which) (tables|views|data)\b|\bschema\b|\bcatalog\b", q):
            return Plan(calls=[("list_tables", {})])
        if m := re.search(r"\b(?:describe|columns? (?:of|in))\s+(?:table\s+)?([\w.]+)", q):
            return Plan(calls=[("describe_table", {"table": m.group(1)})])

        periods = find_periods(q, self.as_of)
        spans = self.member_spans(q)
        members = [(start, d, label) for start, _, d, label in spans]
        dimension = self.dimension(q, masked=[(start, end) for start, end, _, _ in spans], named=spans)
        metric = self.metric(q)
        filters = {d: label for _, d, label in members if d != dimension}
        first_member = members[0] if members else None

        if re.search(r"\bbudgets?\b|\bover ?spend|\bwithin (?:the )?budget", q):
            name = next((b for b in self.vocab.budgets if b.lower() in q and len(b) > 2), "")
            return Plan(calls=[("budget_status", {"name": name})])

        if re.search(
            r"forecast|predict|projected|projection|\bwill\b.*\b(cost|spend|be)\b|end of (?:the )?(month|quarter)", q
        ):
            horizon = "this_month"
            if "next month" in q:
                horizon = "next_month"
            elif "quarter" in q:
                horizon = "this_quarter"
            elif re.search(r"next 30 days|next month days", q):
                horizon = "next_30_days"
            args: dict[str, Any] = {"period": horizon, "metric": metric}
            if first_member:
                args |= {"dimension": first_member[1], "value": first_member[2]}
            return Plan(calls=[("forecast", args)])

        if re.search(
            r"untagged|un-tagged|not tagged|\bno tags?\b|tag coverage|tagging|"
            r"(?:without|missing|lacks?|lacking|has no|have no|with no|no)\s+(?:a |an |the |any )?(?:[\w-]+ )?tags?\b",
            q,
        ):
            return Plan(
                calls=[
                    (
                        "untagged_share",
                        {"tag_key": self.tag_key(q) or "", "period": periods[0] if periods else "last_30_days"},
                    )
                ]
            )

        if waste_kind := _waste_kind(q):
            return Plan(calls=[("waste_list", {"kind": waste_kind, "month": periods[0] if periods else "last_month"})])
        if _SAVINGS.search(q):
            return Plan(calls=[("savings_summary", {"period": periods[0] if periods else "last_month"})])

        if anomalies := self._anomaly_plan(q, periods, members):
            return anomalies

        if re.search(r"\baverage|\bavg\b|\bmean\b|\bmedian\b|\btypical\b", q):
            rest = (
                _without_periods(q) + " " + " ".join(re.findall(r"\b(?:per|a|each|every|by)\s+(?:day|week|month)\b", q))
            )
            grain = "daily"
            if re.search(r"\bmonth(?:ly)?\b", rest):
                grain = "monthly"
            elif re.search(r"\bweek(?:ly)?\b", rest):
                grain = "weekly"
            args = {"period": periods[0] if periods else "last_30_days", "grain": grain, "metric": metric}
            if member_filters := {d: label for _, d, label in members}:
                args["filters"] = member_filters
            return Plan(calls=[("average_cost", args)])

        if re.search(r"\bwhy\b|spike|jump|anomal|explain|what happened|went up|shot up|surge|unusual|sudden", q):
            day = find_day(q, self.as_of) or "latest"
            args = {"day": day, "metric": metric}
            if first_member:
                args |= {"dimension": first_member[1], "value": first_member[2]}
            return Plan(calls=[("explain_cost_change", args)])

        if re.search(
            r"compar|\bvs\.?\b|versus|month over month|\bmom\b|week over week|change[ds]? (?:from|since|between)|"
            r"difference between|\bmovers?\b|grew|growth|increase|decrease|drove|went down",
            q,
        ):
            args = {"metric": metric, "top_n": self.top_n(q, 10), "filters": filters or None}
            if len(periods) >= 2:
                a, b = periods[0], periods[1]
                later, earlier = (a, b) if self._start(a) >= self._start(b) else (b, a)
                args |= {"period": later, "baseline": earlier}
            else:
                args |= {"period": periods[0] if periods else "this_month", "baseline": "previous"}
            cue = re.search(r"\b(what|which|who|drove|driv|movers?|most)\b", q)
            args["dimension"] = dimension or ("service" if cue else "total")
            return Plan(calls=[("compare_periods", args)])

        if unit := self.ranked_time_unit(q):
            default = {"day": "last_30_days", "week": "last_90_days", "month": "all"}[unit]
            args = {"dimension": unit, "period": periods[0] if periods else default, "metric": metric}
            args["top_n"] = self.top_n(q, 1)
            if member_filters := {d: label for _, d, label in members}:
                args["filters"] = member_filters
            return Plan(calls=[("cost_breakdown", args)])

        grain = None
        if re.search(r"\b(daily|per day|by day|each day|day by day)\b", q):
            grain = "daily"
        elif re.search(r"\b(weekly|per week|by week|each week)\b", q):
            grain = "weekly"
        elif re.search(r"\b(monthly|per month|by month|each month|month by month)\b", q):
            grain = "monthly"
        if grain or re.search(r"\btrend|over time|history|time series|chart|plot|evolution|evolve", q):
            grain = grain or "daily"
            default = {"daily": "last_30_days", "weekly": "last_90_days", "monthly": "all"}[grain]
            args = {"period": periods[0] if periods else default, "grain": grain, "metric": metric}
            if dimension and dimension != "service_category":
                args |= {"dimension": dimension, "top_n": self.top_n(q, 5)}
            if filters:
                args["filters"] = filters
            return Plan(calls=[("cost_trend", args)])

        period = periods[0] if periods else "last_30_days"
        if dimension or re.search(r"\btop\b|most expensive|biggest|largest|costliest|breakdown|split", q):
            args = {
                "dimension": dimension or "service",
                "period": period,
                "top_n": self.top_n(q, 10),
                "metric": metric,
            }
            if filters:
                args["filters"] = filters
            return Plan(calls=[("cost_breakdown", args)])

        if re.search(r"how much|total|spen[dt]|\bcosts?\b|\bbill|cost us|pay", q):
            args = {"dimension": "total", "period": period, "metric": metric}
            if filters:
                args["filters"] = filters
            return Plan(calls=[("cost_breakdown", args)])

        return Plan(text=f"I could not map {question.strip()!r} to a question I know how to answer. " + HELP)

    def _anomaly_plan(self, q: str, periods: list[str], members: list[tuple[int, str, str]]) -> Plan | None:
        """Listing or counting recorded anomalies; a question about one day's change is explain_cost_change's."""
        counting = re.search(r"\bhow many\b|\bnumber of\b|\bcount\b|\bhow often\b", q)
        listing = re.search(r"\b(?:list|show|which|what|all|any|were there|recorded|detected|found|flagged|open)\b", q)
        words = re.search(
            r"anomal|outliers?|irregularit|unusual (?:cost |spend(?:ing)? )?(?:events?|days?|charges?|items?)", q
        ) or (re.search(r"\bspikes?\b", q) and (counting or re.search(r"\bspikes\b|flagged|detected", q)))
        if not words or re.search(r"\bwhy\b|explain|what happened|caus|\bdr[io]ve|behind|reason", q):
            return None
        if find_day(q, self.as_of) and not (counting or re.search(r"\b(?:list|show|all)\b", q)):
            return None  # "the anomaly on April 22": explain that day
        args: dict[str, Any] = {"period": periods[0] if periods else "all"}
        member = next(
            ((d, label) for _, d, label in members if d in ("service", "subscription", "resource_group")), None
        )
        if member:
            args |= {"dimension": member[0], "value": member[1]}
        if counting:
            if m := re.search(
                r"\b(?:by|per|each|for each)\s+(service|subscription|resource group|kind|type|status|day|month|level)",
                q,
            ):
                args["group_by"] = {"resource group": "resource_group", "type": "kind"}.get(m.group(1), m.group(1))
            return Plan(calls=[("count_anomalies", args)])
        if listing or words:
            args["top_n"] = self.top_n(q, 50)
            return Plan(calls=[("list_anomalies", args)])
        return None

    def _start(self, token: str) -> dt.date:
        from backend.agent.periods import resolve_period

        return resolve_period(token, self.as_of).start


# Savings questions; "savings plan(s)" alone is a pricing model (a cost question), unless utilisation is asked.
_SAVINGS = re.compile(
    r"\bsavings\b(?! plans?)|savings rate|\bsaved?\b|\bnegotiated\b|\bdiscounts?\b|\butili[sz](?:ation|ed|ing)\b|"
    r"\bunused (?:reservations?|commitments?|savings plans?)"
)
# Waste questions, and which finding they ask for (first match wins).
_WASTE = re.compile(
    r"\bwaste[ds]?\b|\bidle\b|orphan|unattached|\bunused (?:public )?ips?\b|\bunused (?:managed )?disks?\b|"
    r"deallocated|stopped[- ]but[- ]billed|\bstopped vms?\b|zero (?:usage|quantity)|without (?:any )?usage|"
    r"\bno usage\b|(?:started|stopped) (?:costing|being billed|incurring)|cost (?:started|stopped)|"
    r"resources? (?:that|whose cost) (?:started|stopped)"
)
_WASTE_KINDS = (
    (r"disks?", "unattached_disk"),
    (r"\bips?\b|ip address", "idle_public_ip"),
    (r"\bvms?\b|virtual machines?|deallocated", "stopped_vm"),
    (r"zero|without (?:any )?usage|no usage", "zero_usage"),
    (r"\bstarted\b", "started"),
    (r"\bstopped\b", "stopped"),
    (r"orphan|idle|unattached", "orphans"),
)


def _waste_kind(q: str) -> str | None:
    if not _WASTE.search(q):
        return None
    return next((kind for pattern, kind in _WASTE_KINDS if re.search(pattern, q)), "all")


def compose_answer(tool_messages: Sequence[ToolMessage]) -> str:
    """The final answer from tool results: each tool's summary (the full tables are shown to the user)."""
    parts, failed = [], []
    for message in tool_messages:
        text = str(message.content)
        summary = text.split("\n\nrows:", 1)[0].strip()
        if summary.startswith("error:") or message.status == "error":
            failed.append(summary.removeprefix("error:").strip())
        else:
            parts.append(summary)
    if failed and not parts:
        return "I could not answer that: " + "; ".join(failed) + "\n\n" + HELP
    answer = "\n\n".join(parts)
    if failed:
        answer += "\n\n(Part of the question failed: " + "; ".join(failed) + ")"
    return answer


class RuleBasedChatModel(BaseChatModel):
    """A chat model with the LLM interface (bind_tools, tool calls) whose 'reasoning' is QuestionParser.

    Turn 1 (the last message is the user's): emit the tool calls of the plan, or an honest text answer.
    Turn 2 (tool results follow the user's message): summarise them. It never calls a tool twice per question.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vocabulary_loader: Callable[[], Vocabulary] | None = None
    vocabulary_ttl_s: float = 300.0
    _cache: tuple[float, Vocabulary] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "costlake-rules"

    @property
    def model_name(self) -> str:
        return "rule-based"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RuleBasedChatModel:
        # The plans name the tools directly; binding changes nothing.
        return self

    def vocabulary(self) -> Vocabulary:
        if self.vocabulary_loader is None:
            return Vocabulary(as_of=None)
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > self.vocabulary_ttl_s or self._cache[1].as_of is None:
                self._cache = (now, self.vocabulary_loader())
            return self._cache[1]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        after = messages[last_human + 1 :]
        tool_messages = [m for m in after if isinstance(m, ToolMessage)]
        if tool_messages:
            message = AIMessage(content=compose_answer(tool_messages))
        elif last_human < 0:
            message = AIMessage(content=HELP)
        else:
            plan = QuestionParser(self.vocabulary()).plan(str(messages[last_human].content))
            if plan.calls:
                message = AIMessage(
                    content="",
                    tool_calls=[
                        {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
                        for name, args in plan.calls
                    ],
                )
            else:
                message = AIMessage(content=plan.text)
        if run_manager and message.content:
            run_manager.on_llm_new_token(str(message.content))
        return ChatResult(generations=[ChatGeneration(message=message)])
