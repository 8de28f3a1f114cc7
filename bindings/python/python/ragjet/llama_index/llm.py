"""``CachedLLM``: any LlamaIndex LLM behind ragjet's response caches, with a
prompt token budget and cost accounting."""

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Callable, Optional

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.dispatcher import active_instrument_tags, instrument_tags
from llama_index.core.llms.llm import LLM

import ragjet

__all__ = ["ACCOUNTED_TAG", "CachedLLM", "PromptTooLongError", "is_transient_error"]

#: Instrumentation tag set on the wrapped LLM's events when ``CachedLLM``
#: accounts the call itself, so that ``RagjetEventHandler`` does not count
#: it a second time.
ACCOUNTED_TAG = "ragjet.llm_accounted"

logger = logging.getLogger(__name__)

#: Cache failures that must not fail the LLM call (a full or unreachable
#: tier); bad arguments still raise.
_OPERATIONAL = (ragjet.StorageError, ragjet.Overloaded)

#: Version of the JSON envelope a cached response is stored in.
_ENVELOPE_VERSION = 1
#: What replaces the middle of a prompt cut to fit the budget.
_ELISION = "\n…\n"


class PromptTooLongError(ragjet.InvalidInputError):
    """A prompt exceeds ``max_prompt_tokens`` and ``on_overflow="error"``."""

    __module__ = "ragjet.llama_index"


#: Exception class names of LLM clients (openai, anthropic, httpx...) that
#: mean "try again later" without an HTTP status attribute to read.
_TRANSIENT_NAMES = frozenset(
    {
        "APITimeoutError",
        "APIConnectionError",
        "RateLimitError",
        "InternalServerError",
        "ServiceUnavailableError",
        "OverloadedError",
        "ReadTimeout",
        "ConnectTimeout",
        "PoolTimeout",
    }
)


def is_transient_error(exc: BaseException) -> bool:
    """Whether retrying the call that raised ``exc`` may succeed: a timeout,
    a connection failure, an overload (``ragjet.Overloaded``, which includes
    an open circuit and a rate limit), or an HTTP 408, 429 or 5xx status
    (read from ``status_code``, ``status`` or ``response.status_code``).
    Anything else (a bad request, a refused key) fails the same way again."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError, ragjet.Overloaded)):
        return True
    for status in (
        getattr(exc, "status_code", None),
        getattr(exc, "status", None),
        getattr(getattr(exc, "response", None), "status_code", None),
    ):
        if isinstance(status, int) and not isinstance(status, bool):
            return 0 <= status < 65536 and ragjet.is_transient_status(status)
    return type(exc).__name__ in _TRANSIENT_NAMES


class CachedLLM(LLM):
    """Wraps any LlamaIndex ``LLM``: answers repeated prompts from ragjet's
    caches, keeps prompts within a token budget, and accounts tokens, cost
    and latency into ``ragjet.Telemetry``.

    ``complete`` / ``acomplete`` and ``chat`` / ``achat`` look the request up
    in ``response_cache`` (a ``ragjet.ResponseCache``, exact match on the
    prompt or messages, the call's keyword arguments and the model), then in
    ``semantic_cache`` (a ``ragjet.SemanticCache``: a previous request whose
    question embeds within the cache's threshold), and call the wrapped LLM
    only on a miss, storing its answer in both. Entries are scoped by
    ``tenant`` and ``user``: one user's answers never reach another. A
    response served from cache has ``additional_kwargs["ragjet_cache"]`` set
    to ``"exact"`` or ``"semantic"``. Use one ``SemanticCache`` per wrapped
    model: its entries are not keyed by model.

    The semantic cache compares the embedding (``embed_model``, by default a
    ``RagjetEmbedding``) of the last user message of a chat, or of a
    completion prompt's end, cut to what the embedding model reads: a RAG
    prompt puts its question last, after the retrieved context.

    The streaming methods serve a cached answer as one chunk; on a miss they
    stream from the wrapped LLM and store the answer once the stream is
    consumed to its end.

    ``max_prompt_tokens`` caps the prompt, counted by ``tokenizer`` (a
    callable returning a list of tokens; default LlamaIndex's own
    ``get_tokenizer()``, tiktoken's cl100k, bundled with llama-index-core).
    Over the cap, ``on_overflow="truncate"`` (default) cuts a completion
    prompt's middle, keeping its beginning (instructions) and end (the
    question); a chat first drops its oldest messages other than system
    messages and the last one, then cuts the middle of the last message.
    ``on_overflow="error"`` raises ``PromptTooLongError`` (an
    ``InvalidInputError``) instead.

    With ``telemetry`` (a ``ragjet.Telemetry``), every call, served from
    cache or not, is recorded with ``record_llm_call`` under the wrapped
    model's name: prompt and completion tokens (the provider's usage when
    the response's ``raw`` carries one, else counted), seconds, and whether
    it was cached.

    Production controls (all optional, keyword-only): ``retry`` (a
    ``ragjet.RetryPolicy``) retries a call to the wrapped LLM that fails
    transiently (``is_transient``, default :func:`is_transient_error`:
    timeouts, overload, HTTP 429/5xx) after the policy's jittered back-off;
    ``breaker`` (a ``ragjet.CircuitBreaker``) stops calling an LLM that keeps
    failing (``CircuitOpenError``, itself transient, so retried after the
    back-off); ``dead_letters`` (a ``ragjet.DeadLetterStore``) keeps every
    request that failed all its attempts on disk before the error is
    raised, and the raised exception carries the letter's id as
    ``ragjet_dead_letter_id``, so no failed request is lost unnoticed.
    :meth:`redrive_dead_letters` replays them later. A streaming call is
    retried until its stream starts; a failure mid-stream is raised as is.

    Everything else (``metadata``, ``system_prompt``, ``predict``, structured
    prediction) behaves as the wrapped LLM does. Not a ``FunctionCallingLLM``:
    tool-calling agents need the wrapped LLM itself.
    """

    llm: Any = Field(description="The wrapped LLM.", exclude=True)
    tenant: str = Field(default="default", description="Cache scope: tenant.")
    user: Optional[str] = Field(default=None, description="Cache scope: user.")
    max_prompt_tokens: Optional[int] = Field(
        default=None, description="Prompt token budget; None: unlimited.", gt=0
    )
    on_overflow: str = Field(default="truncate", description='"truncate" or "error".')

    _response_cache: Any = PrivateAttr(default=None)
    _semantic_cache: Any = PrivateAttr(default=None)
    _embed_model: Any = PrivateAttr(default=None)
    _telemetry: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _model_key: str = PrivateAttr(default="")
    _retry: Any = PrivateAttr(default=None)
    _breaker: Any = PrivateAttr(default=None)
    _dead_letters: Any = PrivateAttr(default=None)
    _is_transient: Any = PrivateAttr(default=None)
    _sleep: Any = PrivateAttr(default=None)

    def __init__(
        self,
        llm: LLM,
        response_cache: Optional[Any] = None,
        semantic_cache: Optional[Any] = None,
        tenant: str = "default",
        user: Optional[str] = None,
        max_prompt_tokens: Optional[int] = None,
        telemetry: Optional[Any] = None,
        *,
        on_overflow: str = "truncate",
        embed_model: Optional[Any] = None,
        tokenizer: Optional[Callable[[str], list[Any]]] = None,
        retry: Optional[Any] = None,
        breaker: Optional[Any] = None,
        dead_letters: Optional[Any] = None,
        is_transient: Optional[Callable[[BaseException], bool]] = None,
        sleep: Optional[Callable[[float], Any]] = None,
        **kwargs: Any,
    ) -> None:
        """``response_cache=None`` creates an in-memory ``ResponseCache``;
        pass ``False`` for none. ``semantic_cache=None`` means none.
        ``sleep`` waits between retries (default ``time.sleep``, and
        ``asyncio.sleep`` in the async methods); tests pass a recorder.

        Raises:
            TypeError: ``llm`` is not a LlamaIndex ``LLM``.
            ValueError: ``on_overflow`` is neither ``"truncate"`` nor ``"error"``.
        """
        if not isinstance(llm, LLM):
            raise TypeError(f"CachedLLM wraps a llama_index LLM, not {type(llm).__name__}")
        if on_overflow not in ("truncate", "error"):
            raise ValueError(f'on_overflow must be "truncate" or "error", not {on_overflow!r}')
        super().__init__(
            llm=llm,
            tenant=tenant,
            user=user,
            max_prompt_tokens=max_prompt_tokens,
            on_overflow=on_overflow,
            callback_manager=llm.callback_manager,
            system_prompt=llm.system_prompt,
            messages_to_prompt=llm.messages_to_prompt,
            completion_to_prompt=llm.completion_to_prompt,
            output_parser=llm.output_parser,
            pydantic_program_mode=llm.pydantic_program_mode,
            query_wrapper_prompt=llm.query_wrapper_prompt,
            **kwargs,
        )
        if response_cache is None:
            response_cache = ragjet.ResponseCache()
        # Not `response_cache or None`: an empty cache may have len() 0.
        self._response_cache = None if response_cache is False else response_cache
        self._semantic_cache = semantic_cache
        if semantic_cache is not None and embed_model is None:
            from ragjet.llama_index.embedding import RagjetEmbedding

            embed_model = RagjetEmbedding()
        self._embed_model = embed_model
        self._telemetry = telemetry
        self._tokenizer = tokenizer
        self._model_key = _model_key(llm)
        self._retry = retry
        self._breaker = breaker
        self._dead_letters = dead_letters
        self._is_transient = is_transient or is_transient_error
        self._sleep = sleep

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @property
    def response_cache(self) -> Any:
        """The ``ragjet.ResponseCache``, or ``None``."""
        return self._response_cache

    @property
    def semantic_cache(self) -> Any:
        """The ``ragjet.SemanticCache``, or ``None``."""
        return self._semantic_cache

    # -- tokens -------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by this wrapper's tokenizer."""
        if self._tokenizer is None:
            from llama_index.core.utils import get_tokenizer

            self._tokenizer = get_tokenizer()
        return len(self._tokenizer(text))

    def _cut_middle(self, text: str, budget: int) -> str:
        """The longest ``head + _ELISION + tail`` within ``budget`` tokens,
        the head a quarter of the kept text: a prompt's instructions come
        first and its question last."""
        if budget <= self.count_tokens(_ELISION):
            return ""
        lo, hi = 0, len(text)
        best = ""
        while lo <= hi:  # how many characters to keep, by bisection
            keep = (lo + hi) // 2
            head = keep // 4
            candidate = text[:head] + _ELISION + text[len(text) - (keep - head) :]
            if self.count_tokens(candidate) <= budget:
                best, lo = candidate, keep + 1
            else:
                hi = keep - 1
        return best

    def _fit_prompt(self, prompt: str) -> str:
        budget = self.max_prompt_tokens
        if budget is None:
            return prompt
        used = self.count_tokens(prompt)
        if used <= budget:
            return prompt
        if self.on_overflow == "error":
            raise PromptTooLongError(f"prompt of {used} tokens exceeds max_prompt_tokens={budget}")
        return self._cut_middle(prompt, budget)

    def _fit_messages(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        budget = self.max_prompt_tokens
        messages = list(messages)
        if budget is None:
            return messages

        def used(ms: list[ChatMessage]) -> int:
            return sum(self.count_tokens(m.content or "") for m in ms)

        total = used(messages)
        if total <= budget:
            return messages
        if self.on_overflow == "error":
            raise PromptTooLongError(f"chat of {total} tokens exceeds max_prompt_tokens={budget}")
        while total > budget:
            droppable = [
                i
                for i, m in enumerate(messages[:-1])
                if m.role not in (MessageRole.SYSTEM, MessageRole.DEVELOPER)
            ]
            if not droppable:
                break
            del messages[droppable[0]]
            total = used(messages)
        if total > budget:
            last = messages[-1]
            if any(not isinstance(b, TextBlock) for b in last.blocks):
                raise PromptTooLongError(
                    f"chat of {total} tokens exceeds max_prompt_tokens={budget}, and its "
                    "last message holds non-text blocks that cannot be cut"
                )
            rest = total - self.count_tokens(last.content or "")
            cut = last.model_copy(deep=True)
            cut.content = self._cut_middle(last.content or "", max(budget - rest, 0))
            messages[-1] = cut
        return messages

    # -- cache keys and envelopes ------------------------------------------

    def _key(self, kind: str, payload: Any, kwargs: dict) -> str:
        return json.dumps(
            {"kind": kind, "request": payload, "kwargs": kwargs},
            sort_keys=True,
            default=repr,
            ensure_ascii=False,
        )

    def _complete_keys(self, prompt: str, formatted: bool, kwargs: dict) -> tuple:
        """The exact-cache key and the semantic-cache text of a completion."""
        key = self._key("complete", {"prompt": prompt, "formatted": formatted}, kwargs)
        sem = (
            self._semantic_text("complete", prompt, ())
            if self._semantic_cache is not None
            else None
        )
        return key, sem

    def _semantic_text(self, kind: str, prompt: str, messages: Sequence[ChatMessage]) -> str:
        if kind == "chat":
            users = [m for m in messages if m.role == MessageRole.USER] or list(messages)
            prompt = (users[-1].content or "") if users else ""
        return _tail_for(self._embed_model, prompt)

    def _lookup(self, key: str, semantic_text: Optional[str]) -> tuple[Optional[dict], Any]:
        """(envelope or None, how) for a request; also returns the semantic
        vector computed, so that a miss can store it without embedding twice.

        A cache that fails for operational reasons (its disk tier, overload)
        counts as a miss, with a warning: the LLM still answers."""
        vector = None
        try:
            if self._response_cache is not None:
                stored = self._response_cache.get(key, self._model_key, self.tenant, self.user)
                if stored is not None:
                    envelope = _unwrap(stored)
                    if envelope is not None:
                        envelope["how"] = "exact"
                        return envelope, None
            if self._semantic_cache is not None and semantic_text is not None:
                vector = _as_vector(self._embed_model.get_query_embedding(semantic_text))
                found = self._semantic_cache.get(vector, self.tenant, self.user)
                if found is not None:
                    envelope = _unwrap(found[0])
                    if envelope is not None:
                        envelope["how"] = "semantic"
                        return envelope, vector
        except _OPERATIONAL as err:
            logger.warning("CachedLLM: cache lookup failed, calling the LLM: %s", err)
        return None, vector

    def _store(
        self, key: str, semantic_text: Optional[str], vector: Any, kind: str, response: Any
    ) -> None:
        try:
            envelope = _wrap(kind, response)
        except (TypeError, ValueError) as err:  # a response that does not serialise
            logger.warning("CachedLLM: response not cached, it does not serialise: %s", err)
            return
        try:
            if self._response_cache is not None:
                self._response_cache.put(key, self._model_key, envelope, self.tenant, self.user)
            if self._semantic_cache is not None and semantic_text is not None:
                if vector is None:
                    vector = _as_vector(self._embed_model.get_query_embedding(semantic_text))
                self._semantic_cache.put(vector, envelope, self.tenant, self.user)
        except _OPERATIONAL as err:
            logger.warning("CachedLLM: response not cached: %s", err)

    def _record(self, prompt_text: str, response: Any, seconds: float, cached: bool) -> None:
        if self._telemetry is None:
            return
        usage = None if cached else _usage(getattr(response, "raw", None))
        if usage is None:
            text = response.text if isinstance(response, CompletionResponse) else None
            if text is None:
                text = response.message.content or ""
            usage = (self.count_tokens(prompt_text), self.count_tokens(text))
        model = self.llm.metadata.model_name
        self._telemetry.record_llm_call(model, usage[0], usage[1], seconds, cached)

    def _accounting(self) -> Any:
        """Tags the wrapped LLM's instrumentation events while this wrapper
        records the call into telemetry itself."""
        if self._telemetry is None:
            return contextlib.nullcontext()
        return instrument_tags({**active_instrument_tags.get(), ACCOUNTED_TAG: True})

    def _cached_stream(
        self, stream: Any, kind: str, prompt: str, start: float, key: str, sem: Any, vector: Any
    ) -> Generator[Any, None, None]:
        """Yields the wrapped LLM's stream, then records and caches its last
        (complete) response. The accounting tag is set around each step,
        never across a yield, so the consumer's context is left as it was."""
        it = iter(stream)
        last = None
        while True:
            with self._accounting():
                try:
                    last = next(it)
                except StopIteration:
                    break
            yield last
        if last is not None:
            self._record(prompt, last, time.perf_counter() - start, False)
            self._store(key, sem, vector, kind, last)

    async def _acached_stream(
        self, stream: Any, kind: str, prompt: str, start: float, key: str, sem: Any, vector: Any
    ) -> AsyncGenerator[Any, None]:
        """``_cached_stream`` for an async stream."""
        it = stream.__aiter__()
        last = None
        while True:
            with self._accounting():
                try:
                    last = await it.__anext__()
                except StopAsyncIteration:
                    break
            yield last
        if last is not None:
            self._record(prompt, last, time.perf_counter() - start, False)
            await asyncio.to_thread(self._store, key, sem, vector, kind, last)

    # -- production controls -------------------------------------------------

    def _attempts(self) -> int:
        return self._retry.max_attempts if self._retry is not None else 1

    def _admit(self) -> Any:
        return self._breaker.acquire() if self._breaker is not None else None

    def _settle(self, permit: Any, exc: Optional[BaseException]) -> None:
        if permit is None:
            return
        if exc is None:
            permit.success()
        elif self._is_transient(exc):
            permit.failure()
        else:
            permit.ignore()  # a bad request says nothing of the LLM's health

    def _give_up(self, operation: str, payload: dict, exc: BaseException, attempts: int) -> None:
        """Files the request as a dead letter (when a store is set) and tags
        ``exc`` with the letter's id before it is raised."""
        if self._dead_letters is None:
            return
        body = json.dumps(payload, sort_keys=True, default=repr)
        letter = self._dead_letters.push(operation, body, f"{type(exc).__name__}: {exc}", attempts)
        with contextlib.suppress(AttributeError, TypeError):
            exc.ragjet_dead_letter_id = letter["id"]
        logger.warning(
            "CachedLLM: %s failed %d time(s); stored as dead letter %s",
            operation,
            attempts,
            letter["id"],
        )

    def _guarded(self, operation: str, payload: dict, call: Callable[[], Any]) -> Any:
        """Runs ``call`` through the breaker with retries; a request that
        fails every attempt transiently becomes a dead letter."""
        attempts = self._attempts()
        for attempt in range(attempts):
            permit = None
            try:
                permit = self._admit()
                result = call()
            except Exception as exc:
                self._settle(permit, exc)
                if not self._is_transient(exc):
                    raise
                if attempt + 1 >= attempts:
                    self._give_up(operation, payload, exc, attempt + 1)
                    raise
                self._retry.record_retry()
                (self._sleep or time.sleep)(self._retry.delay(attempt))
                continue
            self._settle(permit, None)
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _aguarded(self, operation: str, payload: dict, call: Callable[[], Any]) -> Any:
        """:meth:`_guarded` for a coroutine-returning ``call``."""
        attempts = self._attempts()
        for attempt in range(attempts):
            permit = None
            try:
                permit = self._admit()
                result = await call()
            except Exception as exc:
                self._settle(permit, exc)
                if not self._is_transient(exc):
                    raise
                if attempt + 1 >= attempts:
                    await asyncio.to_thread(self._give_up, operation, payload, exc, attempt + 1)
                    raise
                self._retry.record_retry()
                delay = self._retry.delay(attempt)
                if self._sleep is not None:
                    self._sleep(delay)
                else:
                    await asyncio.sleep(delay)
                continue
            self._settle(permit, None)
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def redrive_dead_letters(self) -> dict:
        """Replays every stored dead letter through the wrapped LLM (through
        this wrapper's breaker, without its retries) and caches the answers;
        letters answered are removed. Returns the store's report,
        ``{"redriven": [ids], "failed": [[id, error], ...]}``."""
        if self._dead_letters is None:
            raise ValueError("this CachedLLM has no dead_letters store")

        def replay(letter: dict) -> None:
            request = json.loads(letter["payload"])
            kwargs = request.get("kwargs") or {}
            permit = self._admit()
            try:
                if request["kind"] == "chat":
                    messages = [ChatMessage.model_validate(m) for m in request["messages"]]
                    _, key, sem, _ = self._chat_request(messages, kwargs)
                    answer = self.llm.chat(messages, **kwargs)
                else:
                    prompt, formatted = request["prompt"], request.get("formatted", False)
                    key, sem = self._complete_keys(prompt, formatted, kwargs)
                    answer = self.llm.complete(prompt, formatted=formatted, **kwargs)
            except Exception as exc:
                self._settle(permit, exc)
                raise
            self._settle(permit, None)
            _, vector = self._lookup(key, sem)
            self._store(key, sem, vector, request["kind"], answer)

        return self._dead_letters.redrive(replay)

    # -- completion ---------------------------------------------------------

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        start = time.perf_counter()
        prompt = self._fit_prompt(prompt)
        key, sem = self._complete_keys(prompt, formatted, kwargs)
        envelope, vector = self._lookup(key, sem)
        if envelope is not None:
            response = _completion_from(envelope)
            self._record(prompt, response, time.perf_counter() - start, True)
            return response
        with self._accounting():
            response = self._guarded(
                "llm.complete",
                _complete_payload(prompt, formatted, kwargs),
                lambda: self.llm.complete(prompt, formatted=formatted, **kwargs),
            )
        self._record(prompt, response, time.perf_counter() - start, False)
        self._store(key, sem, vector, "complete", response)
        return response

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        start = time.perf_counter()
        prompt = await asyncio.to_thread(self._fit_prompt, prompt)
        key, sem = self._complete_keys(prompt, formatted, kwargs)
        envelope, vector = await asyncio.to_thread(self._lookup, key, sem)
        if envelope is not None:
            response = _completion_from(envelope)
            self._record(prompt, response, time.perf_counter() - start, True)
            return response
        with self._accounting():
            response = await self._aguarded(
                "llm.complete",
                _complete_payload(prompt, formatted, kwargs),
                lambda: self.llm.acomplete(prompt, formatted=formatted, **kwargs),
            )
        self._record(prompt, response, time.perf_counter() - start, False)
        await asyncio.to_thread(self._store, key, sem, vector, "complete", response)
        return response

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        start = time.perf_counter()
        prompt = self._fit_prompt(prompt)
        key, sem = self._complete_keys(prompt, formatted, kwargs)
        envelope, vector = self._lookup(key, sem)
        if envelope is not None:
            response = _completion_from(envelope)
            self._record(prompt, response, time.perf_counter() - start, True)
            response.delta = response.text
            return _once(response)
        with self._accounting():
            stream = self._guarded(
                "llm.complete",
                _complete_payload(prompt, formatted, kwargs),
                lambda: self.llm.stream_complete(prompt, formatted=formatted, **kwargs),
            )
        return self._cached_stream(stream, "complete", prompt, start, key, sem, vector)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        start = time.perf_counter()
        prompt = await asyncio.to_thread(self._fit_prompt, prompt)
        key, sem = self._complete_keys(prompt, formatted, kwargs)
        envelope, vector = await asyncio.to_thread(self._lookup, key, sem)
        if envelope is not None:
            response = _completion_from(envelope)
            self._record(prompt, response, time.perf_counter() - start, True)
            response.delta = response.text
            return _aonce(response)
        with self._accounting():
            stream = await self._aguarded(
                "llm.complete",
                _complete_payload(prompt, formatted, kwargs),
                lambda: self.llm.astream_complete(prompt, formatted=formatted, **kwargs),
            )
        return self._acached_stream(stream, "complete", prompt, start, key, sem, vector)

    # -- chat ---------------------------------------------------------------

    def _chat_request(self, messages: Sequence[ChatMessage], kwargs: dict) -> tuple:
        messages = self._fit_messages(messages)
        dumped = [m.model_dump(mode="json") for m in messages]
        key = self._key("chat", dumped, kwargs)
        sem = (
            self._semantic_text("chat", "", messages) if self._semantic_cache is not None else None
        )
        prompt_text = "\n".join(m.content or "" for m in messages)
        return messages, key, sem, prompt_text

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        start = time.perf_counter()
        messages, key, sem, prompt_text = self._chat_request(messages, kwargs)
        envelope, vector = self._lookup(key, sem)
        if envelope is not None:
            response = _chat_from(envelope)
            self._record(prompt_text, response, time.perf_counter() - start, True)
            return response
        with self._accounting():
            response = self._guarded(
                "llm.chat",
                _chat_payload(messages, kwargs),
                lambda: self.llm.chat(messages, **kwargs),
            )
        self._record(prompt_text, response, time.perf_counter() - start, False)
        self._store(key, sem, vector, "chat", response)
        return response

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        start = time.perf_counter()
        messages, key, sem, prompt_text = await asyncio.to_thread(
            self._chat_request, messages, kwargs
        )
        envelope, vector = await asyncio.to_thread(self._lookup, key, sem)
        if envelope is not None:
            response = _chat_from(envelope)
            self._record(prompt_text, response, time.perf_counter() - start, True)
            return response
        with self._accounting():
            response = await self._aguarded(
                "llm.chat",
                _chat_payload(messages, kwargs),
                lambda: self.llm.achat(messages, **kwargs),
            )
        self._record(prompt_text, response, time.perf_counter() - start, False)
        await asyncio.to_thread(self._store, key, sem, vector, "chat", response)
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        start = time.perf_counter()
        messages, key, sem, prompt_text = self._chat_request(messages, kwargs)
        envelope, vector = self._lookup(key, sem)
        if envelope is not None:
            response = _chat_from(envelope)
            self._record(prompt_text, response, time.perf_counter() - start, True)
            response.delta = response.message.content
            return _once(response)
        with self._accounting():
            stream = self._guarded(
                "llm.chat",
                _chat_payload(messages, kwargs),
                lambda: self.llm.stream_chat(messages, **kwargs),
            )
        return self._cached_stream(stream, "chat", prompt_text, start, key, sem, vector)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        start = time.perf_counter()
        messages, key, sem, prompt_text = await asyncio.to_thread(
            self._chat_request, messages, kwargs
        )
        envelope, vector = await asyncio.to_thread(self._lookup, key, sem)
        if envelope is not None:
            response = _chat_from(envelope)
            self._record(prompt_text, response, time.perf_counter() - start, True)
            response.delta = response.message.content
            return _aonce(response)
        with self._accounting():
            stream = await self._aguarded(
                "llm.chat",
                _chat_payload(messages, kwargs),
                lambda: self.llm.astream_chat(messages, **kwargs),
            )
        return self._acached_stream(stream, "chat", prompt_text, start, key, sem, vector)


def _model_key(llm: LLM) -> str:
    """Names the wrapped model and the settings that change its answers, so
    two configurations never share cache entries. Secrets are left out: only
    the metadata and a few sampling fields go in."""
    meta = llm.metadata
    settings = {
        "class": type(llm).__name__,
        "metadata": meta.model_dump(mode="json"),
        "sampling": {
            name: getattr(llm, name, None)
            for name in ("model", "temperature", "top_p", "top_k", "max_tokens", "seed")
        },
    }
    digest = hashlib.sha256(
        json.dumps(settings, sort_keys=True, default=repr).encode()
    ).hexdigest()[:16]
    return f"{type(llm).__name__}/{meta.model_name}#{digest}"


def _wrap(kind: str, response: Any) -> str:
    body = response.model_dump(mode="json", exclude={"raw"})
    return json.dumps({"v": _ENVELOPE_VERSION, "kind": kind, "response": body})


def _unwrap(stored: str) -> Optional[dict]:
    try:
        envelope = json.loads(stored)
    except (TypeError, ValueError):
        return None
    if not isinstance(envelope, dict) or envelope.get("v") != _ENVELOPE_VERSION:
        return None
    return envelope


def _text_of(envelope: dict) -> str:
    body = envelope["response"]
    if envelope["kind"] == "complete":
        return body.get("text") or ""
    return ChatMessage.model_validate(body["message"]).content or ""


def _completion_from(envelope: dict) -> CompletionResponse:
    if envelope["kind"] == "complete":
        response = CompletionResponse.model_validate(envelope["response"])
    else:  # a semantic hit stored by a chat call
        response = CompletionResponse(text=_text_of(envelope))
    response.delta = None
    response.additional_kwargs = {**response.additional_kwargs, "ragjet_cache": envelope["how"]}
    return response


def _chat_from(envelope: dict) -> ChatResponse:
    if envelope["kind"] == "chat":
        response = ChatResponse.model_validate(envelope["response"])
    else:  # a semantic hit stored by a completion call
        response = ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=_text_of(envelope))
        )
    response.delta = None
    response.additional_kwargs = {**response.additional_kwargs, "ragjet_cache": envelope["how"]}
    return response


def _once(item: Any) -> Generator[Any, None, None]:
    yield item


async def _aonce(item: Any) -> AsyncGenerator[Any, None]:
    yield item


def _as_vector(embedding: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(embedding, dtype=np.float32)


def _usage(raw: Any) -> Optional[tuple[int, int]]:
    """(prompt, completion) tokens from a provider's raw response (OpenAI's
    ``usage.prompt_tokens``; Anthropic's ``usage.input_tokens``), if any."""
    if raw is None:
        return None
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is None:
        return None

    def field(*names: str) -> Optional[int]:
        for name in names:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if isinstance(value, int):
                return value
        return None

    prompt = field("prompt_tokens", "input_tokens")
    completion = field("completion_tokens", "output_tokens")
    if prompt is None or completion is None:
        return None
    return prompt, completion


def _tail_for(embed_model: Any, text: str) -> str:
    """The end of ``text`` the embedding model reads whole: a model truncates
    from the end, which would drop a RAG prompt's question."""
    embedder = getattr(embed_model, "embedder", None)
    if embedder is None or not hasattr(embedder, "count_tokens"):
        return text[-2000:]
    limit = max(int(embedder.max_seq_length) - 2, 1)  # [CLS] and [SEP]
    if embedder.count_tokens(text) <= limit:
        return text
    lo, hi = 0, len(text)  # smallest start whose tail fits
    while lo < hi:
        mid = (lo + hi) // 2
        if embedder.count_tokens(text[mid:]) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]


def _complete_payload(prompt: str, formatted: bool, kwargs: dict) -> dict:
    """A completion request as a dead letter stores it (replayable)."""
    return {"kind": "complete", "prompt": prompt, "formatted": formatted, "kwargs": kwargs}


def _chat_payload(messages: Sequence[ChatMessage], kwargs: dict) -> dict:
    """A chat request as a dead letter stores it (replayable)."""
    return {
        "kind": "chat",
        "messages": [m.model_dump(mode="json") for m in messages],
        "kwargs": kwargs,
    }
