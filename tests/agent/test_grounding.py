"""What a model writes instead of a tool call: SQL and printed calls found in prose, figures spotted, cut-off calls dropped."""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from backend.agent.grounding import extract_sql, extract_text_call, has_figures, unbacked_figures
from backend.agent.llm import MALFORMED, complete_tool_calls, null_content_as_empty

TOOLS = ("cost_breakdown", "run_sql", "forecast")


def test_sql_in_a_fenced_block_wins_over_sql_in_the_prose():
    text = "Try SELECT 1 FROM x first.\n```sql\nSELECT a FROM mart.v_cost_monthly;\n```\nThen it is 5."
    assert extract_sql(text) == "SELECT a FROM mart.v_cost_monthly"
    assert extract_sql("```\nWITH t AS (SELECT 1 FROM mart.v_budgets) SELECT * FROM t\n```").startswith("WITH t AS")


def test_bare_sql_ends_at_a_semicolon_or_a_blank_line():
    assert extract_sql("Use this query: SELECT SUM(cost) FROM cost_breakdown WHERE m = 3; it returns 7.") == (
        "SELECT SUM(cost) FROM cost_breakdown WHERE m = 3"
    )
    assert extract_sql("select x\nfrom mart.v_cost_daily\nwhere y = 1\n\nThe answer is 4.") == (
        "select x\nfrom mart.v_cost_daily\nwhere y = 1"
    )


def test_prose_without_sql_has_none():
    assert extract_sql("Select the period you want, and with that I can help.") is None
    assert extract_sql("```python\nprint('SELECT 1 FROM t')\n```") is None
    assert extract_sql("") is None


def test_tool_calls_printed_as_text():
    call = extract_text_call(
        '<tool_call>{"name": "forecast", "arguments": {"period": "next_month"}}</tool_call>', TOOLS
    )
    assert (call.name, call.args) == ("forecast", {"period": "next_month"})
    nested = '{"type": "function", "function": {"name": "run_sql", "arguments": "{\\"sql\\": \\"SELECT 1\\"}"}}'
    assert extract_text_call(nested, TOOLS).args == {"sql": "SELECT 1"}
    assert extract_text_call('{"name": "drop_everything", "arguments": {}}', TOOLS) is None
    assert extract_text_call("cost_breakdown is a tool I have", TOOLS) is None


def test_figures():
    assert has_figures("It cost 1,234.50 EUR") and not has_figures("Hello! Ask me about costs.")


def _chunk(**kwargs) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=kwargs.pop("content", ""), **kwargs))


def _merge(chunks):
    merged = None
    for c in chunks:
        merged = c if merged is None else merged + c
    return merged.message


def _call_chunks(args_pieces, index=0, name="cost_breakdown"):
    first = {"name": name, "args": "", "id": f"call_{index}", "index": index, "type": "tool_call_chunk"}
    rest = [{"name": None, "args": p, "id": None, "index": index, "type": "tool_call_chunk"} for p in args_pieces]
    return [_chunk(tool_call_chunks=[first])] + [_chunk(tool_call_chunks=[r]) for r in rest]


def test_a_streamed_call_cut_off_is_dropped_not_repaired():
    # langchain alone would run this as {"dimension": "total"}: the period silently lost.
    stream = [_chunk(content="Let me look. ")] + _call_chunks(['{"dimension": "total", ', '"period": '])
    message = _merge(complete_tool_calls(iter(stream)))
    assert message.tool_calls == [] and message.content == "Let me look. "
    assert message.response_metadata[MALFORMED][0]["name"] == "cost_breakdown"


def test_complete_streamed_calls_pass_unchanged():
    stream = _call_chunks(['{"dimension": "total", ', '"period": "2025-03"}']) + _call_chunks(["{}"], 1, "forecast")
    message = _merge(complete_tool_calls(iter(stream)))
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("cost_breakdown", {"dimension": "total", "period": "2025-03"}),
        ("forecast", {}),
    ]
    assert MALFORMED not in message.response_metadata


def test_null_assistant_content_is_sent_as_empty():
    payload = {"messages": [{"role": "assistant", "content": None, "tool_calls": []}, {"role": "user", "content": "x"}]}
    assert null_content_as_empty(payload)["messages"][0]["content"] == ""


def test_amounts_no_result_holds():
    sources = ["Total actual cost for 2025-04 to 2025-04-27: 62,433.71 EUR.\n\nrows:\ntotal,cost\nTotal,62433.71"]
    assert unbacked_figures("We spent 62,434 EUR in April 2025 (since 2025-04-01), top 5, 43.4%", sources) == []
    assert unbacked_figures("We spent 99,999.00 EUR on vm-web-01, and 1234 on sub 1111-0000", sources) == [
        "99,999.00",
        "1234",
    ]
