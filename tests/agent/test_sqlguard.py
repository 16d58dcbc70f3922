"""The SQL guard accepts plain analytical SELECTs over the catalog and refuses everything else, with a reason."""

from __future__ import annotations

import pytest

from backend.agent.sqlguard import UnsafeSQLError, check_sql

GOOD = [
    "SELECT service_name, sum(actual_cost) FROM mart.v_cost_daily_summary GROUP BY 1 ORDER BY 2 DESC",
    "select date_trunc('month', charge_date)::date m, sum(actual_cost) from v_cost_daily_summary group by 1",
    "WITH t AS (SELECT * FROM mart.agg_cost_by_tag WHERE tag_key = 'env') "
    "SELECT sum(actual_cost) FILTER (WHERE tag_value = 'untagged') / nullif(sum(actual_cost), 0) FROM t",
    "SELECT charge_date, jsonb_array_elements(contributors) ->> 'value' FROM mart.anomalies",
    "SELECT to_char(charge_month, 'YYYY-MM'), round(sum(actual_cost)::numeric, 2), "
    "rank() over (order by sum(actual_cost) desc) FROM mart.v_cost_monthly GROUP BY 1",
    "SELECT name FROM mart.v_budgets UNION ALL SELECT budget_name FROM mart.budget_alerts",
    "SELECT resource_name FROM mart.v_cost_daily WHERE resource_name ILIKE '%prod%'",
    "SELECT * FROM mart.v_budgets;",
    # Filters the way a model writes them: AND / OR in WHERE, CASE and FILTER; = ANY(ARRAY[...]).
    "SELECT sum(actual_cost) FROM mart.v_cost_daily WHERE charge_date >= DATE '2026-01-01' "
    "AND charge_date < DATE '2026-02-01' AND (service_name = 'Storage' OR service_name = 'Compute')",
    "SELECT sum(CASE WHEN actual_cost > 0 AND service_name <> 'x' THEN actual_cost END), "
    "sum(actual_cost) FILTER (WHERE service_name = 'a' OR NOT service_name = 'b') FROM mart.v_cost_daily",
    "SELECT service_name FROM mart.v_cost_daily WHERE service_name = ANY(ARRAY['Storage', 'Compute'])",
]


@pytest.mark.parametrize("sql", GOOD)
def test_accepts_analytical_selects(sql):
    checked = check_sql(sql, max_rows=100)
    assert checked.sql.upper().startswith(("SELECT", "WITH"))
    assert checked.sql.endswith("LIMIT 100")
    assert all(t.startswith("mart.") for t in checked.tables)


BAD = {
    "multiple statements": "SELECT 1 FROM mart.v_budgets; DROP TABLE mart.anomalies",
    "comment hides a statement": "SELECT 1 FROM mart.v_budgets /* x */; DELETE FROM mart.anomalies -- y",
    "delete": "DELETE FROM mart.anomalies",
    "update": "UPDATE mart.anomalies SET status = 'resolved'",
    "insert": "INSERT INTO mart.budget_alerts (budget_name) VALUES ('x')",
    "ddl": "CREATE TABLE mart.x AS SELECT * FROM mart.v_budgets",
    "drop": "DROP SCHEMA mart CASCADE",
    "truncate": "TRUNCATE mart.anomalies",
    "set": "SET statement_timeout = 0",
    "data-modifying cte": "WITH d AS (DELETE FROM mart.anomalies RETURNING *) SELECT * FROM d",
    "select into": "SELECT * INTO mart.copy FROM mart.v_budgets",
    "for update": "SELECT * FROM mart.v_budgets FOR UPDATE",
    "pg_sleep": "SELECT pg_sleep(10) FROM mart.v_budgets",
    "quoted pg_sleep": 'SELECT "pg_sleep"(10) FROM mart.v_budgets',
    "qualified pg_sleep": "SELECT pg_catalog.pg_sleep(10) FROM mart.v_budgets",
    "pg_sleep in a subquery": "SELECT * FROM mart.v_budgets WHERE 1 = (SELECT 1 FROM pg_sleep(5))",
    "pg_sleep table function": "SELECT * FROM ROWS FROM (pg_sleep(1)), mart.v_budgets",
    "pg_read_file": "SELECT pg_read_file('/etc/passwd') FROM mart.v_budgets",
    "pg_ls_dir": "SELECT pg_ls_dir('.') FROM mart.v_budgets",
    "dblink": "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
    "lo_import": "SELECT lo_import('/etc/passwd') FROM mart.v_budgets",
    "set_config": "SELECT set_config('statement_timeout', '0', false) FROM mart.v_budgets",
    "current_setting": "SELECT current_setting('data_directory') FROM mart.v_budgets",
    "terminate": "SELECT pg_terminate_backend(1) FROM mart.v_budgets",
    "query_to_xml": "SELECT query_to_xml('delete from mart.anomalies', true, true, '') FROM mart.v_budgets",
    "secret column's table": "SELECT webhook_url FROM mart.budgets",
    "audit table": "SELECT * FROM mart.agent_audit",
    "ops schema": "SELECT * FROM ops.pipeline_runs",
    "catalog": "SELECT * FROM pg_catalog.pg_authid",
    "information_schema": "SELECT * FROM information_schema.tables",
    "three-part name": "SELECT * FROM other.mart.v_budgets",
    "no table": "SELECT version()",
    "explain": "EXPLAIN ANALYZE SELECT * FROM mart.v_budgets",
    "copy": "COPY mart.anomalies TO '/tmp/x'",
    "call": "CALL mart.do_something()",
    "placeholder": "SELECT * FROM mart.v_budgets WHERE name = $1",
    "empty": "   ",
    "garbage": "SELEC * FROM",
    "nul": "SELECT 1 FROM mart.v_budgets\x00; DROP TABLE x",
}


@pytest.mark.parametrize("sql", BAD.values(), ids=BAD.keys())
def test_refuses(sql):
    with pytest.raises(UnsafeSQLError):
        check_sql(sql)


@pytest.mark.parametrize(
    ("sql", "limit"),
    [
        ("SELECT * FROM mart.v_budgets LIMIT 5", 5),
        ("SELECT * FROM mart.v_budgets LIMIT 100000", 50),
        ("SELECT * FROM mart.v_budgets LIMIT ALL", 50),
        ("SELECT * FROM mart.v_budgets LIMIT 10 + 10", 50),
        ("SELECT * FROM mart.v_budgets FETCH FIRST 7 ROWS ONLY", 7),
        ("SELECT * FROM mart.v_budgets", 50),
    ],
)
def test_limit_is_added_or_capped(sql, limit):
    checked = check_sql(sql, max_rows=50)
    assert checked.limit == limit
    assert checked.sql.endswith(f"LIMIT {limit}")


def test_runs_the_regenerated_sql_without_comments():
    checked = check_sql("SELECT name /* ; DROP TABLE x */ FROM v_budgets -- trailing")
    assert "DROP" not in checked.sql and "--" not in checked.sql and "/*" not in checked.sql
    assert "mart.v_budgets" in checked.sql  # bare names are schema-qualified
