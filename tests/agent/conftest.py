"""Fixtures for agent tests: one seeded demo mart per session (read-only use), settings, agent factories, a fake LLM server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from backend.agent.agent import CostAgent, build_chat_model
from backend.mart.db import admin_engine, owner_engine
from backend.mart.migrate import upgrade
from tests.agent.fake_openai import FakeChatServer
from tests.agent.seed import agent_on, seed_demo_mart
from tests.conftest import make_settings

TIMEOUT_MS = 1000


@pytest.fixture(scope="session")
def demo_mart_url(pg_admin_url: str) -> Iterator[str]:
    """A migrated mart holding the demo estate (with planted prompt injections); tests only read it,
    except the agent's own audit rows, which tests tell apart by session id."""
    name = f"agent_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    engine = owner_engine(url, poolclass=sa.pool.NullPool)
    seed_demo_mart(engine, injection=True)
    engine.dispose()
    yield url
    _drop(admin, name)
    admin.dispose()


def _drop(admin: sa.Engine, name: str) -> None:
    # WITH (FORCE) ends the backends still attached; seen once to cut the admin connection on a loaded
    # 2-core box, so one retry on a fresh connection.
    for attempt in range(2):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa.exc.OperationalError:
            if attempt:
                raise
            time.sleep(1)


@pytest.fixture(scope="session")
def agent_settings(demo_mart_url, tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("agent"), database_url=demo_mart_url, statement_timeout_ms=TIMEOUT_MS)


@pytest.fixture(scope="session")
def owner(demo_mart_url) -> Iterator[sa.Engine]:
    engine = owner_engine(demo_mart_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def rule_agent(agent_settings) -> Iterator[CostAgent]:
    """The agent as the app builds it with no LLM configured."""
    agent = agent_on(agent_settings)
    yield agent
    agent.ctx.engine.dispose()
    agent.audit.engine.dispose()


@pytest.fixture
def make_agent(agent_settings) -> Iterator[Callable[[BaseChatModel], CostAgent]]:
    built: list[CostAgent] = []

    def make(model: BaseChatModel) -> CostAgent:
        agent = agent_on(agent_settings, model=model)
        built.append(agent)
        return agent

    yield make
    for agent in built:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()


def _fingerprint(owner) -> dict:
    """Row counts of every mart table (the audit excluded: asking is what writes it) and the fact's total."""
    with owner.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mart' "
                "AND table_type = 'BASE TABLE' AND table_name <> 'agent_audit' ORDER BY 1"
            )
        ).scalars()
        counts = {t: conn.execute(sa.text(f'SELECT count(*) FROM mart."{t}"')).scalar() for t in tables}
        counts["fact_total"] = conn.execute(sa.text("SELECT sum(actual_cost) FROM mart.fact_cost_daily")).scalar()
        counts["roles"] = conn.execute(sa.text("SELECT count(*) FROM pg_roles")).scalar()
    return counts


@pytest.fixture
def before(owner):
    snapshot = _fingerprint(owner)
    yield snapshot
    assert _fingerprint(owner) == snapshot, "the agent changed the mart"


@pytest.fixture
def llm_server() -> Iterator[FakeChatServer]:
    """An OpenAI-compatible server on 127.0.0.1 that refuses null assistant content, as llama.cpp's does."""
    server = FakeChatServer(model="qwen2.5-coder-1.5b-instruct-q4_k_m").start()
    yield server
    server.stop()


@pytest.fixture
def llm_agent(agent_settings, llm_server) -> Iterator[Callable[..., CostAgent]]:
    """Agents whose model is langchain-openai's ChatOpenAI pointed at the fake server (LLM_BASE_URL / LLM_MODEL).

    Short client timeouts and no retries by default, so error paths stay fast."""
    built: list[CostAgent] = []

    def make(*, timeout_s: float = 10.0, max_retries: int = 0, **agent_kwargs: Any) -> CostAgent:
        settings = agent_settings.model_copy(update={"llm_base_url": llm_server.url, "llm_model": llm_server.model})
        model = build_chat_model(settings, timeout_s=timeout_s, max_retries=max_retries)
        agent = agent_on(settings, model=model, **agent_kwargs)
        built.append(agent)
        return agent

    yield make
    for agent in built:
        agent.ctx.engine.dispose()
        agent.audit.engine.dispose()


class ScriptedChatModel(BaseChatModel):
    """A fake LLM that replays scripted AIMessages (tool calls included), one per model call."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.seen.append(list(messages))
        step = len(self.seen) - 1
        message = self.script[min(step, len(self.script) - 1)]
        return ChatResult(generations=[ChatGeneration(message=message)])


def tool_call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}


def scripted(*steps: list[dict[str, Any]] | str) -> ScriptedChatModel:
    """Each step is a list of tool calls or a final text."""
    messages = [AIMessage(content=s) if isinstance(s, str) else AIMessage(content="", tool_calls=s) for s in steps]
    return ScriptedChatModel(script=messages, seen=[])
