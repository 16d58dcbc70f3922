"""Checks agent SQL with sqlglot: exactly one SELECT over allow-listed relations, plain functions only, a capped LIMIT.

The guard is one of three layers (the read-only role's grants and the statement timeout are the
others), so it refuses by default: any node, function or relation it does not know is rejected.
What runs is the SQL regenerated from the checked syntax tree (comments dropped), never the text the
model wrote, so a trick that makes sqlglot and Postgres parse the input differently cannot smuggle
anything past the check.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from backend.agent.catalog import ALLOWED_TABLES, SCHEMA

DEFAULT_MAX_ROWS = 1000

# Statement and clause types that write, change the schema or the session, or lock rows.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
    exp.Copy,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Grant,
    exp.Revoke,
    exp.Into,
    exp.Lock,
    exp.LoadData,
    exp.Use,
    exp.Pragma,
    exp.Describe,
    exp.Analyze,
    exp.Comment,
    exp.Attach,
    exp.Detach,
    exp.Declare,
    exp.Execute,
    exp.Kill,
    exp.Placeholder,
    exp.Parameter,
    exp.SessionParameter,
)

# Plain, side-effect-free functions, named as sqlglot reports them (typed nodes by `sql_name()`,
# unknown ones by their own name). Everything else — pg_sleep, pg_read_file, pg_ls_dir, dblink,
# lo_*, set_config, current_setting, pg_terminate_backend, query_to_xml, version(), current_user —
# is refused because it is not listed, not because it is listed somewhere as dangerous.
_FUNCTION_NAMES = (
    # aggregates
    "sum avg count min max count_if stddev stddev_pop stddev_samp variance variance_pop "
    "percentile_cont percentile_disc array_agg group_concat string_agg bool_and bool_or corr "
    "regr_slope regr_intercept approx_distinct median mode "
    # windows
    "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value "
    # conditionals and casts
    "case if coalesce nullif greatest least cast try_cast "
    # numbers
    "abs round ceil floor trunc sign mod pow power sqrt ln log exp div width_bucket safe_divide "
    # text
    "lower upper initcap length trim ltrim rtrim substring substr left right lpad rpad concat concat_ws "
    "replace split_part str_position strpos position starts_with regexp_like regexp_replace regexp_extract "
    # dates
    "extract date_trunc timestamp_trunc datetrunc date_part date_add date_sub date_diff datediff "
    "ts_or_ds_add ts_or_ds_to_date str_to_date str_to_time time_to_str to_char to_date to_timestamp age "
    "make_date make_interval date current_date current_timestamp now interval last_day "
    "generate_series exploding_generate_series generate_date_array "
    # json / arrays (contributors is jsonb)
    "json_extract json_extract_scalar jsonb_extract jsonb_extract_scalar json_extract_path "
    "jsonb_array_elements jsonb_array_length jsonb_extract_path_text jsonb_typeof array_length "
    "array_contains array_to_string unnest explode"
)
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(_FUNCTION_NAMES.split())


class UnsafeSQLError(ValueError):
    """SQL the agent may not run; the message says why, for the model to correct itself."""


@dataclass(frozen=True)
class CheckedSQL:
    sql: str  # regenerated from the checked tree, with the LIMIT applied
    tables: tuple[str, ...]
    limit: int


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


# sqlglot models some operators as functions: AND / OR / XOR (connectors) and the ARRAY[...] literal.
# They compute nothing a SELECT could abuse, so they are operators here, not names to allow.
_OPERATOR_NODES = (exp.Connector, exp.Array)


def _check_functions(tree: exp.Expression) -> None:
    for node in tree.find_all(exp.Func):
        if isinstance(node, _OPERATOR_NODES):
            continue
        name = _function_name(node)
        if name not in ALLOWED_FUNCTIONS:
            raise UnsafeSQLError(f"function {name}() is not allowed; use plain SQL functions (sum, date_trunc, ...)")
        # `pg_catalog.pg_sleep(1)` and friends: a schema-qualified call is never a plain function.
        if isinstance(node.parent, exp.Dot):
            raise UnsafeSQLError(f"schema-qualified function {name}() is not allowed")


def _cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def _check_tables(tree: exp.Expression) -> tuple[str, ...]:
    ctes = _cte_names(tree)
    seen: list[str] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            # FROM generate_series(...) and other table functions: the function check covers them.
            continue
        if table.args.get("catalog"):
            raise UnsafeSQLError(f"three-part name {table.sql('postgres')} is not allowed")
        name = table.name.lower()
        schema = table.db.lower()
        if not schema and name in ctes:
            continue
        qualified = f"{schema or SCHEMA}.{name}"
        if qualified not in ALLOWED_TABLES:
            raise UnsafeSQLError(f"table {qualified} is not allowed; allowed: {', '.join(sorted(ALLOWED_TABLES))}")
        # Qualify so that the session's search_path cannot redirect a bare name to another schema.
        table.set("db", exp.to_identifier(SCHEMA))
        seen.append(qualified)
    if not seen:
        raise UnsafeSQLError("the query reads no mart table; see list_tables")
    return tuple(dict.fromkeys(seen))


def _apply_limit(tree: exp.Query, max_rows: int) -> int:
    current = tree.args.get("limit")
    wanted = max_rows
    if isinstance(current, exp.Limit) and isinstance(current.expression, exp.Literal):
        value = current.expression
        if not value.is_string and str(value.this).isdigit():
            wanted = min(int(value.this), max_rows)
    elif isinstance(current, exp.Fetch) and isinstance(current.args.get("count"), exp.Literal):
        count = current.args["count"]
        if str(count.this).isdigit():
            wanted = min(int(count.this), max_rows)
    # LIMIT ALL, LIMIT 1+1, FETCH ... PERCENT and friends all become the cap.
    tree.set("limit", exp.Limit(expression=exp.Literal.number(wanted)))
    return wanted


def check_sql(sql: str, *, max_rows: int = DEFAULT_MAX_ROWS) -> CheckedSQL:
    """Parse and check one query; returns the SQL to run, or raises UnsafeSQLError with the reason."""
    if not sql or not sql.strip():
        raise UnsafeSQLError("empty query")
    if "\x00" in sql:
        raise UnsafeSQLError("NUL byte in query")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="postgres") if s is not None]
    except SqlglotError as exc:
        raise UnsafeSQLError(f"could not parse the query: {str(exc).splitlines()[0][:200]}") from exc
    if len(statements) != 1:
        raise UnsafeSQLError(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        raise UnsafeSQLError(f"only SELECT is allowed, got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise UnsafeSQLError(f"{node.key.upper()} is not allowed: the agent only reads")
    for select in tree.find_all(exp.Select):
        if select.args.get("into") or select.args.get("locks"):
            raise UnsafeSQLError("SELECT INTO / FOR UPDATE are not allowed")
    _check_functions(tree)
    tables = _check_tables(tree)
    limit = _apply_limit(tree, max_rows)
    return CheckedSQL(sql=tree.sql(dialect="postgres", comments=False), tables=tables, limit=limit)
