"""A local OpenAI-compatible chat-completions server for tests: real HTTP, the real wire format, replies scripted per test.

It checks requests the way real servers do (and llama.cpp's stricter ones, on request): roles, tool
messages answering an earlier tool call id, tool-call arguments as JSON strings, `tool_choice`, and
optionally refuses assistant messages whose content is null. Like llama-cpp-python's
chatml-function-calling server it can refuse tool_choice "required" (`refuse_required`: a 500, or an
empty event stream when streaming), and
a tool_choice naming a function is answered with a call of that function, as a grammar-constrained
server does (the scripted reply's arguments for it, else {}); `repeat_call_names` streams calls as
llama-cpp-python does, with the id and name in every chunk. Replies come from a script, one per
request: a text, tool calls (arguments given as a dict, or as a raw string to send malformed JSON),
an HTTP error, or a delay (for client timeouts). Streaming (`"stream": true`) answers with
server-sent `chat.completion.chunk` events, tool-call arguments split across chunks, as OpenAI does.
Azure OpenAI's route (/openai/deployments/<deployment>/chat/completions?api-version=..., `api-key`
header) answers the same way, for AzureChatOpenAI.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

ROLES = {"system", "developer", "user", "assistant", "tool"}
CHUNK_CHARS = 7  # small pieces, so clients must reassemble text and arguments


@dataclass(frozen=True)
class Call:
    """One tool call in a reply; `arguments` as a string is sent verbatim (malformed JSON on purpose)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        args = self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)
        return {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": self.name, "arguments": args},
        }


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request."""

    content: str | None = None
    calls: tuple[Call, ...] = ()
    status: int = 200
    error: str = ""
    delay_s: float = 0.0


def text(content: str) -> Reply:
    return Reply(content=content)


def tools(*calls: Call | tuple[str, dict[str, Any] | str]) -> Reply:
    return Reply(calls=tuple(c if isinstance(c, Call) else Call(*c) for c in calls))


def error(status: int, message: str = "internal error") -> Reply:
    return Reply(status=status, error=message)


def slow(seconds: float, then: Reply | None = None) -> Reply:
    base = then or text("too late")
    return Reply(base.content, base.calls, base.status, base.error, delay_s=seconds)


Responder = Callable[[dict[str, Any]], Reply]


class WireError(ValueError):
    """A request a real server would refuse with 400."""


def validate_request(body: dict[str, Any], *, reject_null_content: bool) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise WireError("'model' is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError("'messages' must be a non-empty array")
    pending: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise WireError(f"messages[{i}].role {role!r} is not one of {sorted(ROLES)}")
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if m.get("content") is None and (reject_null_content or not calls):
                # llama.cpp's server refuses a null content even beside tool calls.
                raise WireError(f"messages[{i}]: assistant content must not be null")
            for c in calls:
                fn = c.get("function") or {}
                if c.get("type") != "function" or not c.get("id") or not fn.get("name"):
                    raise WireError(f"messages[{i}].tool_calls: id, type 'function' and function.name are required")
                if not isinstance(fn.get("arguments"), str):
                    raise WireError(f"messages[{i}].tool_calls[].function.arguments must be a JSON string")
                pending.add(c["id"])
        elif role == "tool":
            if m.get("tool_call_id") not in pending:
                raise WireError(f"messages[{i}]: tool message answers no preceding tool call id")
            if not isinstance(m.get("content"), str | list):
                raise WireError(f"messages[{i}]: tool content must be a string")
        elif m.get("content") is None:
            raise WireError(f"messages[{i}]: {role} content is required")
    for t in body.get("tools") or []:
        fn = t.get("function") or {}
        if t.get("type") != "function" or not fn.get("name") or not isinstance(fn.get("parameters", {}), dict):
            raise WireError("tools[] must be {'type': 'function', 'function': {'name', 'parameters'}}")
    choice = body.get("tool_choice")
    if choice is not None:
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise WireError(f"tool_choice {choice!r} is not none, auto or required")
        elif not (isinstance(choice, dict) and choice.get("type") == "function" and choice["function"].get("name")):
            raise WireError("tool_choice object must name a function")
        if not body.get("tools") and choice != "none":
            raise WireError("tool_choice needs tools")


class FakeChatServer:
    """`/v1/chat/completions` on 127.0.0.1 (an ephemeral port); `script(...)` sets the replies of a test."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        reject_null_content: bool = True,
        refuse_required: bool = False,
        repeat_call_names: bool = False,
    ) -> None:
        self.model = model
        self.reject_null_content = reject_null_content
        self.refuse_required = refuse_required
        self.repeat_call_names = repeat_call_names
        self.requests: list[dict[str, Any]] = []  # every request body received, in order
        self.paths: list[str] = []  # the path (with query) of each, in order
        self.refused: list[str] = []  # why requests were refused with 400
        self._replies: list[Reply] = []
        self._responder: Responder | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def root(self) -> str:
        """The server's root: what AzureChatOpenAI takes as its endpoint."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (LLM_BASE_URL)."""
        return f"{self.root}/v1"

    def start(self) -> FakeChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Reply | str, responder: Responder | None = None) -> None:
        """Replies in order (a str is a text reply); once used up, the last one repeats, or `responder` decides."""
        with self._lock:
            self._replies = [text(r) if isinstance(r, str) else r for r in replies]
            self._responder = responder
            self.requests.clear()
            self.paths.clear()
            self.refused.clear()

    def _next(self, body: dict[str, Any], path: str) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.paths.append(path)
            index = len(self.requests) - 1
            if index < len(self._replies):
                return self._replies[index]
            if self._responder is not None:
                return self._responder(body)
            return self._replies[-1] if self._replies else text("")

    # --- HTTP ---------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("fake openai: " + format, *args)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, _error_body(f"no route {self.path}", "not_found"))

            def do_POST(self) -> None:
                route, _, query = self.path.partition("?")
                azure = re.fullmatch(r"/openai/deployments/([^/]+)/chat/completions", route.rstrip("/"))
                if route.rstrip("/") != "/v1/chat/completions" and not azure:
                    self._json(404, _error_body(f"no route {self.path}", "not_found"))
                    return
                if azure and ("api-version=" not in query or not self.headers.get("api-key")):
                    self._json(
                        401 if not self.headers.get("api-key") else 404,
                        _error_body("api-key and api-version are required", "invalid_request_error"),
                    )
                    return
                if not azure and not (self.headers.get("Authorization") or "").startswith("Bearer "):
                    self._json(401, _error_body("missing bearer token", "invalid_request_error"))
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                    if not isinstance(body, dict):
                        raise WireError("the body must be a JSON object")
                    if azure and not body.get("model"):
                        # Azure names the model by its deployment, in the path; the body need not.
                        body["model"] = azure.group(1)
                    validate_request(body, reject_null_content=server.reject_null_content)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    server.refused.append(str(exc))
                    self._json(400, _error_body(str(exc), "invalid_request_error"))
                    return
                if server.refuse_required and body.get("tool_choice") == "required":
                    # What llama-cpp-python 0.3.36's chatml-function-calling handler does: it asserts
                    # tool_choice == "auto". Unstreamed that is a 500; streamed, the 200 and the event-stream
                    # headers are out before the handler runs, and the stream ends with no event.
                    server.refused.append("tool_choice 'required'")
                    if body.get("stream"):
                        self.send_response(200)
                        self.send_header("Content-Type", "text/event-stream")
                        self.send_header("Connection", "close")
                        self.end_headers()
                        self.close_connection = True
                    else:
                        self._json(500, _error_body("AssertionError", "internal_server_error"))
                    return
                reply = _forced(server._next(body, self.path), body.get("tool_choice"))
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                if reply.status != 200:
                    self._json(reply.status, _error_body(reply.error, "server_error"))
                    return
                message, finish = _message(reply)
                if body.get("stream"):
                    self._stream(body, message, finish)
                else:
                    self._json(200, _completion(server.model, message, finish, body))

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any], message: dict[str, Any], finish: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                # No length is known up front: the stream ends when the connection closes.
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk"}
                base |= {"created": int(time.time()), "model": server.model}

                def send(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> None:
                    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
                    self.wfile.write(b"data: " + json.dumps(base | {"choices": choices} | extra).encode() + b"\n\n")
                    self.wfile.flush()

                send({"role": "assistant", "content": ""})
                content = message.get("content") or ""
                for i in range(0, len(content), CHUNK_CHARS):
                    send({"content": content[i : i + CHUNK_CHARS]})
                for index, call in enumerate(message.get("tool_calls") or []):
                    fn = call["function"]
                    head = {"index": index, "id": call["id"], "type": "function"}
                    send({"tool_calls": [head | {"function": {"name": fn["name"], "arguments": ""}}]})
                    args = fn["arguments"]
                    for i in range(0, len(args), CHUNK_CHARS):
                        piece = {"arguments": args[i : i + CHUNK_CHARS]}
                        if server.repeat_call_names:
                            # llama-cpp-python: every chunk repeats the id, type and name, beside a legacy
                            # function_call delta.
                            send(
                                {
                                    "function_call": {"name": fn["name"]} | piece,
                                    "tool_calls": [head | {"function": {"name": fn["name"]} | piece}],
                                }
                            )
                        else:
                            send({"tool_calls": [{"index": index, "function": piece}]})
                send({}, finish)
                if (body.get("stream_options") or {}).get("include_usage"):
                    send(None, usage=_usage(body, message))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler


def _forced(reply: Reply, choice: Any) -> Reply:
    """A named tool_choice gets a call of that tool whatever the script says: the grammar allows nothing else."""
    if not isinstance(choice, dict) or reply.status != 200:
        return reply
    name = choice["function"]["name"]
    arguments = next((c.arguments for c in reply.calls if c.name == name), {})
    return Reply(calls=(Call(name, arguments),), delay_s=reply.delay_s)


def _message(reply: Reply) -> tuple[dict[str, Any], str]:
    if reply.calls:
        # OpenAI sends null content beside tool calls.
        return {"role": "assistant", "content": reply.content, "tool_calls": [c.wire() for c in reply.calls]}, (
            "tool_calls"
        )
    return {"role": "assistant", "content": reply.content or ""}, "stop"


def _usage(body: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    # Roughly four characters a token: enough for clients that count tokens.
    prompt = len(json.dumps(body.get("messages"))) // 4
    completion = len(json.dumps(message)) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(model: str, message: dict[str, Any], finish: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(body, message),
    }


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
