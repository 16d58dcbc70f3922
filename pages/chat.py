"""Ask about costs: chat with the cost agent; each answer shows the SQL that ran, its table, a chart for time series, downloads."""

from __future__ import annotations

import uuid

import pandas as pd
import plotly.express as px
import streamlit as st

from app import auth, ui
from app.context import get_agent
from backend.agent.agent import AgentAnswer
from backend.agent.rules import EXAMPLES
from backend.agent.tools import ToolOutcome
from backend.auth import Principal


def _md(text: str) -> str:
    # Streamlit reads $...$ as LaTeX; amounts and names must show as typed.
    return text.replace("$", "\\$")


def _chart(frame: pd.DataFrame):
    x = frame.columns[0]
    numeric = [c for c in frame.columns[1:] if pd.api.types.is_numeric_dtype(frame[c])]
    groups = [c for c in frame.columns[1:] if c not in numeric and c != "currency"]
    if not numeric:
        return None
    if groups:
        return px.line(frame, x=x, y=numeric[0], color=groups[0], markers=True)
    return px.line(frame, x=x, y=numeric, markers=True)


def render_results(answer: AgentAnswer, key: str) -> None:
    results: list[ToolOutcome] = answer.results
    for i, result in enumerate(results):
        label = f"{result.tool} · {len(result.frame)} rows" + ("" if result.ok else " · failed")
        with st.expander(label, expanded=i == len(results) - 1):
            for statement in result.statements:
                st.code(statement.sql, language="sql")
                if statement.error:
                    st.caption(f"error: {statement.error}")
            if result.chart and (figure := _chart(result.frame)) is not None:
                st.plotly_chart(figure, key=f"chart-{key}-{i}")
            st.dataframe(result.frame, hide_index=True, width="stretch")
            st.download_button(
                "Download CSV",
                result.frame.to_csv(index=False),
                file_name=f"costlake-{result.tool}.csv",
                mime="text/csv",
                key=f"download-{key}-{i}",
            )
    failed = [c for c in answer.tool_calls if not c.ok and c.outcome is not None]
    for call in failed:
        st.caption(f"{call.tool}: {call.outcome.summary}")
    if answer.audit_error:
        st.warning(f"This question could not be written to the audit log: {answer.audit_error}")


def _asker(principal: Principal) -> str | None:
    """Who asks, for mart.agent_audit: the signed-in user's address; None in laptop mode (the agent then
    names the OS user)."""
    return principal.email if principal.kind == "user" else None


st.title("Ask about your costs")
ui.data_as_of()
principal = auth.current_principal()  # viewers may ask: every role reads
agent = get_agent()
if "chat_messages" not in st.session_state:
    st.session_state.chat_messages = []
    st.session_state.chat_session = uuid.uuid4().hex

if agent.uses_llm:
    st.caption(
        f"Model: {agent.model_name}. Answers come from read-only queries on the cost mart; every question is audited."
    )
else:
    st.caption(
        "No LLM is configured (LLM_MODEL / LLM_BASE_URL / LLM_API_KEY): the built-in rule-based assistant answers "
        "common FinOps questions. Every question is audited."
    )
with st.expander("Examples"):
    st.markdown("\n".join(f"- {_md(e)}" for e in EXAMPLES))

for n, message in enumerate(st.session_state.chat_messages):
    with st.chat_message(message["role"]):
        st.markdown(_md(message["text"]))
        if message.get("answer") is not None:
            render_results(message["answer"], key=str(n))

if prompt := st.chat_input("Ask about your cloud costs…"):
    history = [(m["role"], m["text"]) for m in st.session_state.chat_messages]
    st.session_state.chat_messages.append({"role": "user", "text": prompt})
    with st.chat_message("user"):
        st.markdown(_md(prompt))
    with st.chat_message("assistant"):
        final: dict[str, AgentAnswer] = {}

        def tokens():
            for event in agent.stream(
                prompt, history=history, session_id=st.session_state.chat_session, user_name=_asker(principal)
            ):
                if isinstance(event, AgentAnswer):
                    final["answer"] = event
                else:
                    yield _md(event)

        st.write_stream(tokens())
        answer = final["answer"]
        render_results(answer, key=str(len(st.session_state.chat_messages)))
    st.session_state.chat_messages.append({"role": "assistant", "text": answer.text, "answer": answer})
