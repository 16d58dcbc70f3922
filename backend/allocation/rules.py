"""The allocation rule set: tag key aliases, inherited parent tags and ordered owner / split rules, as YAML.

One document holds everything a user edits on the Showback page, so a GitOps repository can keep it as one
file (`export_yaml` / `parse_yaml` round-trip it) and every save is one numbered version in the mart:

    version: 1                      # format of the file, not the rules' version (the mart numbers those)
    tags:
      normalise_separators: true    # "cost center", "cost_center" and "cost-center" are one key
      aliases: {costcenter: cost-center, environment: env}   # key as found -> canonical key
      inherit:                      # Azure-style tag inheritance: a resource lacking the key gets the parent's
        subscriptions: {contoso-shared: {team: platform}}   # subscription name, guid or /subscriptions/<guid>
        resource_groups: {"contoso-prod/rg-net-hub": {team: platform}}   # [<subscription>/]<group>
    rules:                          # first match wins, in this order
      - id: shared-subscription
        match: {subscription: contoso-shared}
        split: {method: proportional}             # even | proportional | fixed (with percentages)
      - id: team-tag
        match: {tag: team}                        # any value: the owner is the value
      - id: payments-api
        match: {resource_id: "/resourcegroups/rg-api-"}   # a regex, case-insensitive
        owner: payments
      - id: leftovers
        match: {unallocated: true}                # what no rule above matched
        split: {method: even, owners: [frontend, payments]}

Tag keys arrive from silver trimmed and case-folded; `canonical_key` adds the separator rule and the aliases.
Regexes are checked here with Python's `re` and must stay in the syntax Postgres, Java (Spark) and Rust
(Sail) regexes share: no look-around, no backreferences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT_VERSION = 1
MATCH_FIELDS = ("tag", "resource_group", "subscription", "service", "resource_id", "unallocated")
SPLIT_METHODS = ("even", "proportional", "fixed")
_SEPARATORS = re.compile(r"[\s_\-]+")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
_UNSHARED_REGEX = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P[=<]")  # look-around, backreferences, named groups


class RulesError(ValueError):
    """A rule set that cannot be used; the message names the rule or field and what to change."""


def normalise_key(key: str, *, separators: bool = True) -> str:
    """Trimmed, case-folded, and (with `separators`) runs of spaces, underscores and hyphens as one hyphen."""
    folded = " ".join(str(key).split()).casefold()
    return _SEPARATORS.sub("-", folded) if separators else folded


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Exactly one condition. `tag` is a key, optionally `key=value`; names compare case-insensitively."""

    tag: str | None = None
    resource_group: str | None = None
    subscription: str | None = None
    service: str | None = None
    resource_id: str | None = None  # a regex searched anywhere in the (lower-case) ARM id
    unallocated: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> Match:
        given = [f for f in MATCH_FIELDS if getattr(self, f) not in (None, "", False)]
        if len(given) != 1:
            raise ValueError(f"a match needs exactly one of {', '.join(MATCH_FIELDS)} (got {given or 'none'})")
        if self.resource_id is not None:
            if _UNSHARED_REGEX.search(self.resource_id):
                raise ValueError("resource_id regex: look-around and backreferences are not supported by every engine")
            try:
                re.compile(self.resource_id)
            except re.error as exc:
                raise ValueError(f"resource_id is not a valid regex: {exc}") from None
        return self

    @property
    def field(self) -> str:
        return next(f for f in MATCH_FIELDS if getattr(self, f) not in (None, "", False))

    @property
    def value(self) -> str:
        return str(getattr(self, self.field))

    def tag_parts(self) -> tuple[str, str | None]:
        key, _, value = (self.tag or "").partition("=")
        return key.strip(), (value.strip() or None) if "=" in (self.tag or "") else None

    def describe(self) -> str:
        return "what no rule above matched" if self.field == "unallocated" else f"{self.field} {self.value}"


class Split(_Strict):
    method: Literal["even", "proportional", "fixed"]
    owners: tuple[str, ...] = ()  # even / proportional: only these owners (empty: every owner of the month)
    percentages: dict[str, float] = Field(default_factory=dict)  # fixed: owner -> percent, adding up to 100

    @model_validator(mode="after")
    def _check(self) -> Split:
        if self.method == "fixed":
            if not self.percentages:
                raise ValueError("a fixed split needs percentages: {owner: percent, ...} adding up to 100")
            if any(p <= 0 for p in self.percentages.values()):
                raise ValueError("fixed split percentages must be above 0")
            total = sum(self.percentages.values())
            if abs(total - 100) > 1e-6:
                raise ValueError(f"fixed split percentages add up to {total:g}, not 100")
        elif self.percentages:
            raise ValueError(f"percentages are only for the fixed method, not {self.method}")
        if any(not o.strip() for o in [*self.owners, *self.percentages]):
            raise ValueError("an owner name cannot be empty")
        return self

    def targets(self) -> tuple[str, ...]:
        return tuple(self.percentages) if self.method == "fixed" else self.owners


class Rule(_Strict):
    id: str
    match: Match
    owner: str | None = None  # assign: this owner (tag rules without it: the tag's value)
    split: Split | None = None
    description: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"rule id {value!r}: use lower-case letters, digits, '-', '_' or '.' (up to 63)")
        return value

    @model_validator(mode="after")
    def _kind(self) -> Rule:
        if self.owner is not None and self.split is not None:
            raise ValueError("a rule either assigns an owner or splits, not both")
        if self.owner is None and self.split is None and self.match.field != "tag":
            raise ValueError("give an owner (or a split); only a tag rule may take the owner from the tag's value")
        if self.owner is not None and not self.owner.strip():
            raise ValueError("owner cannot be empty")
        return self

    @property
    def kind(self) -> str:
        return "split" if self.split is not None else "assign"


class Inherit(_Strict):
    subscriptions: dict[str, dict[str, str]] = Field(default_factory=dict)
    resource_groups: dict[str, dict[str, str]] = Field(default_factory=dict)


class TagSettings(_Strict):
    normalise_separators: bool = True
    aliases: dict[str, str] = Field(default_factory=dict)
    inherit: Inherit = Field(default_factory=Inherit)


class RuleSet(_Strict):
    version: int = FORMAT_VERSION
    tags: TagSettings = Field(default_factory=TagSettings)
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> RuleSet:
        if self.version != FORMAT_VERSION:
            raise ValueError(f"file format version {self.version} is not known; this Costlake reads {FORMAT_VERSION}")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice: ids name a rule in the results, keep them unique")
            seen.add(rule.id)
        for raw, canonical in self.tags.aliases.items():
            if not raw.strip() or not canonical.strip():
                raise ValueError("a tag alias maps a non-empty key to a non-empty key")
        return self

    # --- tag keys -----------------------------------------------------------------------------------
    def canonical_key(self, key: str) -> str:
        """The key a raw (silver) key is counted under: normalised, then through the aliases (also normalised)."""
        sep = self.tags.normalise_separators
        norm = normalise_key(key, separators=sep)
        aliases = {
            normalise_key(k, separators=sep): normalise_key(v, separators=sep) for k, v in self.tags.aliases.items()
        }
        return aliases.get(norm, norm)

    def key_map(self, raw_keys: Iterable[str]) -> dict[str, str]:
        return {k: self.canonical_key(k) for k in raw_keys}

    def parent_tags(self) -> list[tuple[str, str, str, str]]:
        """(subscription, resource group or "", canonical key, value) of every inherited tag; group before subscription."""
        out = []
        for scope, tags in self.tags.inherit.resource_groups.items():
            sub, _, group = scope.rpartition("/")
            for k, v in tags.items():
                out.append((sub.strip(), group.strip(), self.canonical_key(k), str(v).strip()))
        for sub, tags in self.tags.inherit.subscriptions.items():
            for k, v in tags.items():
                out.append((sub.strip(), "", self.canonical_key(k), str(v).strip()))
        return out


def merge_preview(ruleset: RuleSet, keys: Mapping[str, int]) -> list[dict[str, Any]]:
    """What merges: per canonical key the raw keys folded into it with their resource counts (merges first)."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for raw, count in keys.items():
        groups.setdefault(ruleset.canonical_key(raw), []).append((raw, int(count)))
    rows = [
        {
            "canonical_key": canonical,
            "merges": len(members) > 1 or members[0][0] != canonical,
            "keys_found": ", ".join(f"{k!r} ({n})" for k, n in sorted(members, key=lambda m: (-m[1], m[0]))),
            "resources": sum(n for _, n in members),
        }
        for canonical, members in groups.items()
    ]
    return sorted(rows, key=lambda r: (not r["merges"], -r["resources"], r["canonical_key"]))


# --- YAML ------------------------------------------------------------------------------------------
def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "file"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def from_dict(data: Any) -> RuleSet:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RulesError("the rules file must be a mapping with 'tags' and 'rules' (see the example on the page)")
    try:
        return RuleSet.model_validate(dict(data))
    except ValidationError as exc:
        raise RulesError(f"the rules are not valid, nothing was saved: {_errors(exc)}") from None


def parse_yaml(text: str) -> RuleSet:
    """A rule set from YAML text; RulesError names the line or field to fix (nothing is saved on error)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RulesError(f"the rules file is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return from_dict(data)


def to_dict(ruleset: RuleSet) -> dict[str, Any]:
    return ruleset.model_dump(mode="json", exclude_defaults=True) | {"version": ruleset.version}


def export_yaml(ruleset: RuleSet) -> str:
    """YAML a GitOps repository can keep; `parse_yaml(export_yaml(r)) == r`."""
    data = to_dict(ruleset)
    ordered = {"version": data.pop("version"), **data}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, default_flow_style=False, width=110)
