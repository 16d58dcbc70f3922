"""The monthly showback report of one owner: CSV lines and a self-contained HTML page a browser prints to PDF."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

CSV_COLUMNS = ("month", "owner", "currency", "subscription_id", "resource_group", "service_name", "resource_id",
               "rule", "method", "share", "actual_cost", "amortized_cost")  # fmt: skip


def _money(value: Decimal | None, currency: str) -> str:
    return "not available" if value is None else f"{value:,.2f} {currency}"


def _method(line: dict[str, Any]) -> str:
    return f"split {line['share']:.1%}" if line["method"] == "split" else str(line["method"])


def report_csv(lines: Sequence[dict[str, Any]], *, owner: str, month: dt.date, currency: str) -> str:
    """The owner's lines for the month, one per source row and rule (exact amounts, as the mart holds them)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for line in lines:
        writer.writerow(line | {"month": month.strftime("%Y-%m"), "owner": owner, "currency": currency})
    return out.getvalue()


def report_html(
    lines: Sequence[dict[str, Any]],
    *,
    owner: str,
    month: dt.date,
    currency: str,
    metric: str,
    rules_version: int | None,
    estate_total: Decimal | None,
) -> str:
    """A printable page (A4, no scripts, no external assets): totals, by service, and every line."""
    total = sum((line["cost"] or Decimal(0) for line in lines), Decimal(0))
    direct = sum((line["cost"] or Decimal(0) for line in lines if line["method"] == "direct"), Decimal(0))
    by_service: dict[str, Decimal] = {}
    for line in lines:
        name = line["service_name"] or "(none)"
        by_service[name] = by_service.get(name, Decimal(0)) + (line["cost"] or Decimal(0))
    share = f"{float(total / estate_total):.1%}" if estate_total else "n/a"
    esc = html.escape
    service_rows = "".join(
        f"<tr><td>{esc(name)}</td><td class=n>{_money(cost, currency)}</td></tr>"
        for name, cost in sorted(by_service.items(), key=lambda kv: -kv[1])
    )
    line_rows = "".join(
        "<tr>"
        f"<td>{esc(line['service_name'] or '(none)')}</td><td>{esc(line['resource_group'] or '')}</td>"
        f"<td class=id>{esc(line['resource_id'] or '(no resource)')}</td><td>{esc(line['rule'] or '')}</td>"
        f"<td>{esc(_method(line))}</td>"
        f"<td class=n>{_money(line['cost'], currency)}</td></tr>"
        for line in lines
    )
    title = f"Showback {esc(owner)} {month:%B %Y}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
@page {{ size: A4; margin: 14mm; }}
body {{ font: 11pt/1.35 system-ui, sans-serif; color: #222; }}
h1 {{ font-size: 18pt; margin: 0 0 4pt; }} h2 {{ font-size: 13pt; margin: 14pt 0 4pt; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ border-bottom: 1px solid #ddd; padding: 3pt 4pt; }}
th {{ text-align: left; background: #f3f3f3; }} .n {{ text-align: right; white-space: nowrap; }}
.id {{ font-size: 8pt; word-break: break-all; }} .kpi {{ display: flex; gap: 24pt; margin: 8pt 0; }}
.kpi div {{ border: 1px solid #ddd; padding: 6pt 10pt; }} .kpi b {{ display: block; font-size: 14pt; }}
thead {{ display: table-header-group; }} tr {{ page-break-inside: avoid; }}
</style></head><body>
<h1>{title}</h1>
<p>{esc(metric)} cost in {esc(currency)} · rules version {rules_version if rules_version is not None else "none"}
 · generated {dt.date.today():%Y-%m-%d} by Costlake</p>
<div class="kpi"><div>Total<b>{_money(total, currency)}</b></div><div>Direct<b>{_money(direct, currency)}</b></div>
<div>Shared (split to you)<b>{_money(total - direct, currency)}</b></div><div>Share of the estate<b>{share}</b></div></div>
<h2>By service</h2><table><thead><tr><th>service</th><th class=n>cost</th></tr></thead><tbody>{service_rows}</tbody></table>
<h2>Lines</h2><table><thead><tr><th>service</th><th>resource group</th><th>resource</th><th>rule</th><th>method</th>
<th class=n>cost</th></tr></thead><tbody>{line_rows}</tbody></table>
</body></html>
"""
