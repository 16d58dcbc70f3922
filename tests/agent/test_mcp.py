"""The MCP server as a subprocess on the seeded demo mart, spoken to by the MCP SDK's own client (stdio and HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import mcp_types as types
import pytest
import sqlalchemy as sa
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.agent.conftest import TIMEOUT_MS

REPO = Path(__file__).resolve().parents[2]
MARCH = "charge_date BETWEEN '2025-03-01' AND '2025-03-31'"
CALL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def server_env(demo_mart_url, tmp_path_factory) -> dict[str, str]:
    """The environment a desktop assistant would give the server: the mart's URL and nothing else of ours."""
    return {
        "APP_ENV": "test",
        "DATA_DIR": str(tmp_path_factory.mktemp("mcp")),
        "DATABASE_URL": demo_mart_url,
        "STATEMENT_TIMEOUT_MS": str(TIMEOUT_MS),
        "PYTHONPATH": str(REPO),
    }


def _client_name() -> str:
    return f"pytest-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def stdio_session(env: dict[str, str], client_name: str):
    params = StdioServerParameters(command=sys.executable, args=["-m", "backend.agent.mcp"], env=env, cwd=str(REPO))
    async with stdio_client(params) as (read, write):
        info = types.Implementation(name=client_name, version="1.0")
        async with ClientSession(read, write, client_info=info, read_timeout_seconds=CALL_TIMEOUT_S) as session:
            await session.initialize()
            yield session


def _payload(result: types.CallToolResult) -> dict:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return json.loads(result.content[0].text)


def _audit_rows(owner, user_name: str) -> list:
    with owner.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT question, answer, model, tool_calls, sql_statements, error, session_id FROM mart.agent_audit "
                "WHERE user_name = :u ORDER BY audit_id"
            ),
            {"u": user_name},
        ).all()


def test_stdio_tools_breakdown_errors_and_audit(server_env, owner, before):
    client = _client_name()

    async def scenario() -> dict:
        out: dict = {}
        async with stdio_session(server_env, client) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            out["tools"] = tools
            out["breakdown"] = await session.call_tool(
                "cost_breakdown", {"dimension": "service", "period": "2025-03", "top_n": 100}
            )
            out["delete"] = await session.call_tool("run_sql", {"sql": "DELETE FROM mart.fact_cost_daily"})
            out["bad_top_n"] = await session.call_tool("cost_breakdown", {"top_n": "lots"})
            out["bad_dimension"] = await session.call_tool("cost_breakdown", {"dimension": "colour"})
            out["unknown"] = await session.call_tool("drop_everything", {})
            out["misspelt"] = await session.call_tool("cost_breakdown", {"periods": "2025-03"})
            out["forecast"] = await session.call_tool("forecast", {})
            out["sql"] = await session.call_tool(
                "run_sql", {"sql": f"SELECT sum(actual_cost) AS total FROM mart.v_cost_daily_summary WHERE {MARCH}"}
            )
            resources = await session.list_resources()
            out["resources"] = [str(r.uri) for r in resources.resources]
            out["catalog"] = await session.read_resource("costlake://catalog")
            out["table"] = await session.read_resource("costlake://catalog/mart.v_cost_daily_summary")
        return out

    out = anyio.run(scenario)

    tools = out["tools"]
    expected = {
        "cost_breakdown",
        "compare_periods",
        "explain_cost_change",
        "list_anomalies",
        "count_anomalies",
        "forecast",
        "budget_status",
        "average_cost",
        "run_sql",
        "list_tables",
        "describe_table",
    }
    assert expected <= set(tools)
    breakdown_schema = tools["cost_breakdown"].input_schema
    assert {"dimension", "period", "top_n", "metric", "filters"} <= set(breakdown_schema["properties"])
    assert breakdown_schema["properties"]["top_n"]["maximum"] == 100
    assert all(t.annotations.read_only_hint and not t.annotations.destructive_hint for t in tools.values())

    # The breakdown's amounts are the mart's, to the cent, as strings with their currency.
    result = out["breakdown"]
    assert not result.is_error
    payload = _payload(result)
    assert result.structured_content == payload
    with owner.connect() as conn:
        mart = conn.execute(
            sa.text(
                f"SELECT service_name, currency, round(sum(actual_cost), 2) FROM mart.v_cost_daily_summary "
                f"WHERE {MARCH} GROUP BY 1, 2"
            )
        ).all()
    assert {(r["service"], r["currency"]): Decimal(r["cost"]) for r in payload["rows"]} == {
        (service, currency): total for service, currency, total in mart
    }
    assert all(isinstance(r["cost"], str) for r in payload["rows"])
    assert payload["currencies"] == sorted({c for _, c, _ in mart})
    assert payload["sql"] and "2025-03" in payload["summary"]

    # A write is refused by the guard and comes back as a tool error with the reason; the mart is unchanged
    # (the `before` fixture checks every table after the test).
    refused = out["delete"]
    assert refused.is_error and "SELECT" in _payload(refused)["error"]
    for name in ("bad_top_n", "bad_dimension", "unknown", "misspelt"):
        assert out[name].is_error, name
    assert "top_n" in _payload(out["bad_top_n"])["error"]
    assert "unknown dimension 'colour'" in _payload(out["bad_dimension"])["error"]
    assert "no tool named" in _payload(out["unknown"])["error"]
    assert "unknown arguments for cost_breakdown: periods" in _payload(out["misspelt"])["error"]

    # A table without a currency column (the forecast's) names the mart's currencies; its summary the one used.
    forecast = _payload(out["forecast"])
    assert forecast["mart_currencies"] == ["EUR"] and "EUR" in forecast["summary"]
    assert all(r["actual"] is None or isinstance(r["actual"], str) for r in forecast["rows"])

    # run_sql returns Postgres' exact numeric as a string.
    (row,) = _payload(out["sql"])["rows"]
    with owner.connect() as conn:
        exact = conn.execute(sa.text(f"SELECT sum(actual_cost) FROM mart.v_cost_daily_summary WHERE {MARCH}")).scalar()
    assert Decimal(row["total"]) == exact

    assert "costlake://catalog" in out["resources"]
    assert "mart.v_cost_daily_summary" in out["catalog"].contents[0].text
    assert "charge_date" in out["table"].contents[0].text

    # Every call is one audit row under the client's name, errors with their message.
    rows = _audit_rows(owner, f"mcp:{client}")
    assert len(rows) == 8
    first = rows[0]
    assert first.question.startswith("[mcp] cost_breakdown ") and first.model == "mcp" and first.error is None
    assert first.tool_calls[0]["tool"] == "cost_breakdown" and first.tool_calls[0]["ok"] is True
    assert first.sql_statements  # the SQL the tool ran, as for chat questions
    delete = rows[1]
    assert delete.tool_calls[0]["ok"] is False and delete.error
    assert len({r.session_id for r in rows}) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server(server_env, tmp_path):
    port = _free_port()
    log = (tmp_path / "mcp-http.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.agent.mcp", "--http", "--port", str(port)],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), **server_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "mcp-http.log").read_text()
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        pytest.fail("the MCP HTTP server did not start: " + (tmp_path / "mcp-http.log").read_text())
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_streamable_http_breakdown_and_audit(http_server, owner, before):
    client = _client_name()

    async def scenario():
        async with streamable_http_client(http_server) as (read, write):
            info = types.Implementation(name=client, version="1.0")
            async with ClientSession(read, write, client_info=info, read_timeout_seconds=CALL_TIMEOUT_S) as session:
                await session.initialize()
                names = [t.name for t in (await session.list_tools()).tools]
                total = await session.call_tool("cost_breakdown", {"dimension": "total", "period": "2025-03"})
                refused = await session.call_tool("run_sql", {"sql": "DROP TABLE mart.fact_cost_daily"})
                return names, total, refused

    names, total, refused = anyio.run(scenario)
    assert "cost_breakdown" in names
    assert not total.is_error
    (row,) = _payload(total)["rows"]
    with owner.connect() as conn:
        exact = conn.execute(
            sa.text(f"SELECT round(sum(actual_cost), 2) FROM mart.v_cost_daily_summary WHERE {MARCH}")
        ).scalar()
    assert Decimal(row["cost"]) == exact
    assert refused.is_error and _payload(refused)["error"]
    rows = _audit_rows(owner, f"mcp:{client}")
    assert [r.tool_calls[0]["tool"] for r in rows] == ["cost_breakdown", "run_sql"]
    assert rows[0].session_id and not rows[0].session_id.startswith("mcp-")  # the HTTP session, not the process


def test_attack_corpus_through_mcp_writes_nothing_and_stops_at_the_timeout(server_env, before):
    # The same corpus as the in-process and over-the-wire tests, sent by an MCP client to run_sql: every
    # statement is refused or stopped by the reader role's timeout, none hangs, the mart is unchanged.
    from tests.agent.test_attacks import CORPUS, HEAVY

    async def scenario() -> dict[str, tuple[float, types.CallToolResult]]:
        out = {}
        async with stdio_session(server_env, _client_name()) as session:
            for name, sql in CORPUS.items():
                t0 = time.perf_counter()
                result = await session.call_tool("run_sql", {"sql": sql})
                out[name] = ((time.perf_counter() - t0) * 1000, result)
        return out

    results = anyio.run(scenario)
    assert set(results) == set(CORPUS)
    for name, (elapsed_ms, result) in results.items():
        assert elapsed_ms < TIMEOUT_MS + 5000, name
        text = result.content[0].text if result.content else ""
        if CORPUS[name] in HEAVY.values():
            assert result.is_error and "timeout" in text, (name, text)
        if result.is_error:
            assert text, name  # says why
