"""llama-cpp-python as a runtime: chat messages in, streamed tokens out.

One ``Llama`` per session holds the KV cache, so a session serves one chat at
a time (a lock); a box that needs several at once sets a pool size for the
model in the manager. Tokens are handed to ``on_token`` as they come, on the
inference thread; ``cancel`` (a threading.Event) stops generation between two
tokens, which is how barge-in cuts an answer short without waiting for it.

The history is cut to fit the context window here, where the tokenizer is:
the system prompt and the newest turns are kept, the oldest turns dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import BadRequestError, EdgeAgentError
from agent.voice.engines import EngineRuntime, EngineSession
from runtimes.base import LoadOptions, warmed

N_CTX = 2048
_PER_MESSAGE_TOKENS = 6  # role markers of the chat template


class LlamaSession(EngineSession):
    feed_keys: ClassVar[dict[str, tuple[tuple[type, ...], bool]]] = {
        "messages": ((list,), True),
        "max_tokens": ((int,), False),
        "temperature": ((float, int), False),
        "on_token": ((), False),
        "cancel": ((threading.Event,), False),
        "stop": ((list,), False),
        "seed": ((int,), False),
    }

    def _count(self, text: str) -> int:
        return len(self._engine.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def fit(self, messages: list[dict[str, Any]], max_tokens: int) -> list[dict[str, Any]]:
        """Drop the oldest non-system turns until prompt + answer fit the context window."""
        budget = N_CTX - max_tokens - 8
        system = [m for m in messages if m.get("role") == "system"][:1]
        rest = [m for m in messages if m.get("role") != "system"]
        cost = [self._count(str(m.get("content", ""))) + _PER_MESSAGE_TOKENS for m in system + rest]
        total = sum(cost)
        first = len(system)
        while total > budget and len(rest) > 1:
            total -= cost[first]
            del cost[first]
            rest.pop(0)
        if total > budget:
            raise BadRequestError(
                f"the prompt needs about {total} tokens; the context window holds {N_CTX} "
                f"with {max_tokens} for the answer: shorten it",
                code="prompt_too_long",
            )
        return system + rest

    def run(self, feed: Any, *, validate: bool = False) -> dict[str, Any]:
        if validate:
            self.check_feed(feed)
        llm = self.live_engine()
        max_tokens = int(feed.get("max_tokens") or 128)
        on_token: Callable[[str], None] | None = feed.get("on_token")
        cancel: threading.Event | None = feed.get("cancel")
        parts: list[str] = []
        finish = "stop"
        t0 = time.perf_counter()
        first_s: float | None = None
        with self._lock:
            messages = self.fit(list(feed["messages"]), max_tokens)
            try:
                stream = llm.create_chat_completion(
                    messages=messages,
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=float(feed.get("temperature", 0.2)),
                    stop=feed.get("stop") or None,
                    seed=int(feed.get("seed", 0)),
                )
                for chunk in stream:
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        if first_s is None:
                            first_s = time.perf_counter() - t0
                        parts.append(piece)
                        if on_token is not None:
                            on_token(piece)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            except EdgeAgentError:
                raise
            except Exception as exc:
                raise EdgeAgentError(f"llama.cpp failed: {exc}", code="inference_failed") from None
        return {
            "text": "".join(parts),
            "tokens": len(parts),
            "finish_reason": finish,
            "first_token_s": first_s,
            "seconds": time.perf_counter() - t0,
            "messages_used": len(messages),
        }

    def zero_feed(self) -> dict[str, Any]:
        """The warm-up request: one token of an answer to "Hi"."""
        return {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}

    def close(self) -> None:
        with self._lock:
            llm, self._engine = self._engine, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


class LlamaRuntime(EngineRuntime):
    name: ClassVar[str] = "llama-cpp"
    extra: ClassVar[str] = "llm"
    suffixes: ClassVar[tuple[str, ...]] = (".gguf",)
    modules: ClassVar[tuple[str, ...]] = ("llama_cpp",)

    def _import_engine(self) -> Any:
        import llama_cpp

        return llama_cpp

    def load(self, model: Path, device: str, options: LoadOptions) -> LlamaSession:
        path, llama_cpp = self.prepare_load(model, device)
        try:
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=N_CTX, n_threads=options.threads, n_batch=256, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BadRequestError(
                f"llama.cpp cannot load {path.name} ({exc}); the GGUF file may be truncated: reinstall it",
                code="model_invalid",
            ) from None
        return warmed(LlamaSession(self.name, llm, path), options)
