"""Every import follows ARCHITECTURE.md's arrows, SQL over mart.* / ops.* lives only in backend/mart, and every
engine comes from backend/mart/db.py.

The imports of every module (module level, inside functions, under TYPE_CHECKING alike) are read with ast;
a wrong arrow fails naming the module, what it imports and the rule it breaks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from backend.config import REPO_ROOT

PRODUCT = ("app", "backend", "pages", "scheduler")
FIRST_PARTY = (*PRODUCT, "bench", "tests")

# What each part of the product may import (besides itself), by module prefix; the longest prefix that
# names a module decides. "backend.pipeline" orchestrates the steps, so it may use any backend package.
BASE = ("backend.config", "backend.logs")
# The mart's public face (DESIGN.md decision 11): the named reads and audited writes pages and the agent
# call. Its loader, migrations, locks, cursors, run bookkeeping (run_records) and analytics store are the pipeline's.
MART_FACE = tuple(
    f"backend.mart.{name}"
    for name in (
        "queries",
        "agent_queries",
        "analytics",
        "budgets_sql",
        "history",
        "reconcile",
        "freshness",
        "waste",
        "allocation",
        "model",
        "audit",
        "demo",
        "batches",
    )
)
UI = (
    *BASE,
    "backend.auth",
    *MART_FACE,
    "backend.analytics",
    "backend.agent",
    "backend.allocation",
    "backend.notify",
    "backend.sources",
    "backend.pipeline.service",
    "backend.pipeline.sources",
    "backend.lake.browse",
)
ALLOWED: dict[str, tuple[str, ...]] = {
    # Settings refuses a bad NOTIFY_* value at start with the channels' rules: a leaf of pure checks.
    "backend.config": ("backend.logs", "backend.notify.rules"),
    "backend.notify.rules": ("backend.config",),
    "backend.logs": ("backend.config",),
    "backend.auth": BASE,
    "backend.lake": BASE,
    "backend.allocation": BASE,
    "backend.sources": (*BASE, "backend.lake"),
    # The mart stores the values of a few domain modules: it may read their types and rules, nothing else.
    "backend.mart": (
        *BASE,
        "backend.auth",
        "backend.lake",
        "backend.allocation",
        "backend.notify.channels",
        "backend.notify.render",
        "backend.notify.rules",
        "backend.sources.cursors",
        "backend.sources.ids",
    ),
    "backend.ingest": (*BASE, "backend.lake", "backend.mart", "backend.sources"),
    # The decoder spells subscription ids with the one rule budgets and the agent use.
    "backend.medallion": (*BASE, "backend.lake", "backend.allocation", "backend.sources.ids"),
    "backend.analytics": (
        *BASE,
        "backend.auth",
        "backend.lake",
        "backend.mart",
        "backend.notify",
        "backend.sources.ids",
    ),
    "backend.notify": (*BASE, "backend.auth", "backend.mart"),
    "backend.agent": (*BASE, "backend.auth", *MART_FACE, "backend.analytics"),
    "backend.metrics": (*BASE, "backend.mart", "backend.ingest.monitor"),
    "backend.demo": (*BASE, "backend.auth", "backend.lake", "backend.mart", "backend.sources", "backend.analytics"),
    # The embedded Postgres creates its database and the health check connects with the one engine factory.
    "backend.runtime": (*BASE, "backend.lake", "backend.mart.db"),
    "backend.pipeline": ("backend",),
    # The composition root builds what every process shares from the storage and the servers alone.
    "backend.resources": (*BASE, "backend.lake", "backend.mart", "backend.runtime"),
    # Entry points start the embedded servers they need, through the composition root.
    "backend.notify.__main__": (
        *BASE,
        "backend.auth",
        "backend.mart",
        "backend.notify",
        "backend.runtime",
        "backend.resources",
    ),  # fmt: skip
    "backend.agent.mcp_server": (
        *BASE,
        "backend.auth",
        "backend.mart",
        "backend.agent",
        "backend.analytics",
        "backend.runtime",
        "backend.resources",
    ),  # fmt: skip
    "scheduler": (*BASE, "backend.auth", "backend.mart", "backend.pipeline"),
    # The UI reaches backend through its public faces: never the demo, the Spark jobs, ingest's internals.
    "app": (*UI, "backend.ingest.monitor"),
    # The process's wiring (the composition side): it starts the runtime, the scheduler and the metrics endpoint.
    "app.process": ("app", "backend", "scheduler"),
    "app.context": ("app", "backend", "scheduler"),
    "app.serve": ("app", "backend", "scheduler"),
    "app.main": ("app", "backend", "scheduler"),
    "pages": ("app", *UI),
}

# Wrong arrows kept on purpose until the work that removes them: (module, imported prefix, why).
EXCEPTIONS: tuple[tuple[str, str, str], ...] = ()

# Nothing in the product imports the test tree or the benchmarks; the demo is loaded from the pipeline only.
NEVER = {
    "backend": ("app", "pages", "scheduler", "bench", "tests"),
    "app": ("pages", "bench", "tests", "backend.demo"),
    "pages": ("bench", "tests", "backend.demo"),
    "scheduler": ("app", "pages", "bench", "tests", "backend.demo"),
}
DEMO_IMPORTERS = ("backend.pipeline", "backend.demo")

SQL = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TRUNCATE)\s+(mart|ops)\.")


def _modules() -> Iterator[tuple[str, Path]]:
    for top in PRODUCT:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from backend.mart import budgets_sql` imports the module backend.mart.budgets_sql.
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _rule(module: str) -> tuple[str, tuple[str, ...]] | None:
    owners = [p for p in ALLOWED if _under(module, p)]
    return (max(owners, key=len), ALLOWED[max(owners, key=len)]) if owners else None


def _part(name: str) -> str:
    """The package a module belongs to: backend.<package>, or the top folder."""
    head = name.split(".")
    return ".".join(head[:2]) if head[0] == "backend" and len(head) > 1 else head[0]


def _wrong_arrows() -> list[str]:
    wrong = []
    for module, path in _modules():
        for line, target in _imports(path):
            if target.split(".")[0] not in FIRST_PARTY or _part(target) == _part(module):
                continue
            where = f"{path.relative_to(REPO_ROOT)}:{line}: {module} imports {target}"
            if any(_under(module, m) and _under(target, t) for m, t, _ in EXCEPTIONS):
                continue
            top = module.split(".")[0]
            banned = [n for n in NEVER.get(top, ()) if _under(target, n)]
            if banned:
                wrong.append(f"{where} (rule: {top} never imports {banned[0]})")
                continue
            if _under(target, "backend.demo") and not any(_under(module, m) for m in DEMO_IMPORTERS):
                wrong.append(f"{where} (rule: the demo is loaded from backend.pipeline only)")
                continue
            rule = _rule(module)
            if rule is not None and not any(_under(target, allowed) for allowed in rule[1]):
                wrong.append(f"{where} (rule: {rule[0]} may import only {', '.join(rule[1])})")
    return wrong


def test_every_import_follows_the_architecture():
    wrong = _wrong_arrows()
    assert not wrong, "imports against ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_the_exceptions_are_still_needed():
    """An exception nobody needs any more is removed, so the list stays the work left to do."""
    used = set()
    for module, path in _modules():
        for _, target in _imports(path):
            for m, t, _ in EXCEPTIONS:
                if _under(module, m) and _under(target, t):
                    used.add((m, t))
    stale = [(m, t) for m, t, _ in EXCEPTIONS if (m, t) not in used]
    assert not stale, f"exceptions no module needs any more: {stale}"


def _strings(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_sql_over_the_mart_lives_in_backend_mart():
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {SQL.search(text).group(0)!r}"
        for module, path in _modules()
        if not _under(module, "backend.mart")
        for line, text in _strings(path)
        if SQL.search(text)
    ]
    assert not found, "SQL over mart.* / ops.* outside backend/mart:\n" + "\n".join(found)


# The one engine factory, and Alembic's env.py, which builds the engine its migrations run on.
ENGINE_FACTORY = ("backend/mart/db.py", "backend/mart/migrations/env.py")
ENGINE_CALL = re.compile(r"\bcreate_engine\s*\(")


def _builds_engine(node: ast.AST) -> bool:
    """Whether a node names create_engine, in a call such as sa.create_engine, a reference or an import, or is
    a string that calls it: the source of a script a test runs in a subprocess."""
    if isinstance(node, ast.Name):
        return node.id == "create_engine"
    if isinstance(node, ast.Attribute):
        return node.attr == "create_engine"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any(alias.name.rsplit(".", 1)[-1] == "create_engine" for alias in node.names)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return ENGINE_CALL.search(node.value) is not None
    return False


def _engine_lines(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted({node.lineno for node in ast.walk(tree) if _builds_engine(node)})


def test_every_engine_comes_from_the_one_factory():
    """The product and the tests build engines with backend.mart.db (owner_engine, reader_engine, admin_engine),
    so pool, pre-ping and the reader's session options are decided in one place."""
    found = [
        f"{rel}:{line}: create_engine"
        for top in (*PRODUCT, "tests")
        for path in sorted((REPO_ROOT / top).rglob("*.py"))
        if (rel := path.relative_to(REPO_ROOT).as_posix()) not in ENGINE_FACTORY
        for line in _engine_lines(path)
    ]
    use = "use its owner_engine, reader_engine or admin_engine"
    assert not found, f"engines built outside backend/mart/db.py ({use}):\n" + "\n".join(found)
