"""langchain-openai chat models with fixes for what real OpenAI-compatible servers do: null content, cut-off tool calls, repeated call names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import AzureChatOpenAI, ChatOpenAI

log = logging.getLogger(__name__)

# Where a streamed reply lists the tool calls it held back because their arguments were not JSON.
MALFORMED = "malformed_tool_calls"


def null_content_as_empty(payload: dict) -> dict:
    """OpenAI accepts "" beside tool calls; llama.cpp's server refuses the null langchain-openai sends."""
    for message in payload.get("messages") or []:
        if message.get("role") == "assistant" and message.get("content") is None:
            message["content"] = ""
    return payload


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def complete_tool_calls(chunks: Iterator[ChatGenerationChunk]) -> Iterator[ChatGenerationChunk]:
    """Pass text on as it streams; hold tool-call chunks back until the reply ends, send each call's id and
    name once, and drop calls whose arguments are not a JSON object.

    langchain merges streamed arguments with a partial-JSON parser, so a call cut off mid-way
    ('{"dimension": "total", "period": ') would run with the arguments it still had (here, no period:
    the default one). Without streaming the same reply is an invalid tool call; this makes both the same:
    the call does not run, and the reply's response_metadata[MALFORMED] says what was dropped.

    OpenAI names a streamed call in its first chunk only; llama-cpp-python's server repeats the id and the
    name in every chunk, which langchain's merge concatenates ("cost_breakdowncost_breakdown..."), so a
    repeat of what the call already has is dropped.
    """
    held: list[tuple[ChatGenerationChunk, list[dict]]] = []
    raw: dict[Any, dict[str, str]] = {}
    for chunk in chunks:
        message = chunk.message
        pieces = getattr(message, "tool_call_chunks", None)
        if not pieces:
            yield chunk
            continue
        kept = []
        for piece in pieces:
            entry = raw.setdefault(piece.get("index"), {"name": "", "id": "", "args": ""})
            piece = dict(piece)
            for key in ("name", "id"):
                if entry[key] and piece.get(key) == entry[key]:
                    piece[key] = None
                else:
                    entry[key] += piece.get(key) or ""
            entry["args"] += piece.get("args") or ""
            kept.append(piece)
        held.append((chunk, kept))
    bad = {index for index, entry in raw.items() if entry["args"].strip() and not _is_json_object(entry["args"])}
    for index in bad:
        log.warning("dropping tool call %s: its arguments are not JSON: %r", raw[index]["name"], raw[index]["args"])
    for chunk, kept in held:
        message = chunk.message
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=message.content,
                tool_call_chunks=[p for p in kept if p.get("index") not in bad],
                response_metadata=message.response_metadata,
                usage_metadata=message.usage_metadata,
                id=message.id,
            ),
            generation_info=chunk.generation_info,
        )
    if bad:
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={MALFORMED: [raw[i] for i in sorted(bad, key=str)]})
        )


class CompatibleChatOpenAI(ChatOpenAI):
    """ChatOpenAI for any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp)."""

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        return null_content_as_empty(super()._get_request_payload(input_, stop=stop, **kwargs))

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        return complete_tool_calls(super()._stream(*args, **kwargs))


class CompatibleAzureChatOpenAI(AzureChatOpenAI):
    """AzureChatOpenAI with the same fixes."""

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        return null_content_as_empty(super()._get_request_payload(input_, stop=stop, **kwargs))

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        return complete_tool_calls(super()._stream(*args, **kwargs))
