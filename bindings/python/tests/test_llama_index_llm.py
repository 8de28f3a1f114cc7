"""CachedLLM: response and semantic caches, token budget, telemetry."""

import asyncio
import json

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import PromptTemplate

import ragjet
from ragjet.llama_index import CachedLLM, RagjetEmbedding
from ragjet.llama_index.llm import PromptTooLongError


class CountingLLM(MockLLM):
    """MockLLM (echoes the prompt, or answers "text text ..." with
    max_tokens) counting the calls that reach it from outside, by method
    (its chat calls its own complete, which is not counted again)."""

    calls: dict = {}
    depth: int = 0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = {}

    def _run(self, name, call):
        if self.depth == 0:
            self.calls[name] = self.calls.get(name, 0) + 1
        self.depth += 1
        try:
            return call()
        finally:
            self.depth -= 1

    async def _arun(self, name, call):
        if self.depth == 0:
            self.calls[name] = self.calls.get(name, 0) + 1
        self.depth += 1
        try:
            return await call()
        finally:
            self.depth -= 1

    def complete(self, prompt, formatted=False, **kwargs):
        return self._run(
            "complete",
            lambda: super(CountingLLM, self).complete(prompt, formatted=formatted, **kwargs),
        )

    def stream_complete(self, prompt, formatted=False, **kwargs):
        return self._run(
            "stream_complete",
            lambda: super(CountingLLM, self).stream_complete(prompt, formatted=formatted, **kwargs),
        )

    def chat(self, messages, **kwargs):
        return self._run("chat", lambda: super(CountingLLM, self).chat(messages, **kwargs))

    async def acomplete(self, prompt, formatted=False, **kwargs):
        return await self._arun(
            "acomplete",
            lambda: super(CountingLLM, self).acomplete(prompt, formatted=formatted, **kwargs),
        )

    async def achat(self, messages, **kwargs):
        return await self._arun("achat", lambda: super(CountingLLM, self).achat(messages, **kwargs))


class RecordingTelemetry:
    def __init__(self):
        self.llm_calls = []

    def record_llm_call(self, model, prompt_tokens, completion_tokens, seconds, cached):
        self.llm_calls.append((model, prompt_tokens, completion_tokens, seconds, cached))


def words(n, start=0):
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_the_second_identical_completion_comes_from_the_cache():
    inner = CountingLLM()
    llm = CachedLLM(inner)
    first = llm.complete("What is ragjet?")
    second = llm.complete("What is ragjet?")
    assert inner.calls == {"complete": 1}
    assert first.text == second.text == "What is ragjet?"
    assert "ragjet_cache" not in first.additional_kwargs
    assert second.additional_kwargs["ragjet_cache"] == "exact"
    llm.complete("What is ragjet?", formatted=True)  # another request
    llm.complete("What is ragjet?", temperature=0.5)  # other call arguments
    assert inner.calls == {"complete": 3}
    assert isinstance(llm.response_cache, ragjet.ResponseCache)


def test_predict_through_the_wrapper_equals_the_wrapped_llm():
    inner = CountingLLM(system_prompt="Be brief.")
    llm = CachedLLM(inner)
    template = PromptTemplate("Tell me about {topic}.")
    assert llm.metadata == inner.metadata
    assert llm.predict(template, topic="caches") == inner.predict(template, topic="caches")
    assert llm.predict(template, topic="caches") == "Be brief.\n\nTell me about caches."
    assert inner.calls == {"complete": 2}  # the wrapper's second predict was cached


def test_tenants_and_users_do_not_share_entries():
    cache = ragjet.ResponseCache()
    inner = CountingLLM()
    alice = CachedLLM(inner, response_cache=cache, tenant="acme", user="alice")
    bob = CachedLLM(inner, response_cache=cache, tenant="acme", user="bob")
    other = CachedLLM(inner, response_cache=cache, tenant="globex", user="alice")
    for llm in (alice, bob, other, alice, bob, other):
        llm.complete("same question")
    assert inner.calls == {"complete": 3}


def test_different_models_do_not_share_entries():
    cache = ragjet.ResponseCache()
    short, long = CountingLLM(max_tokens=2), CountingLLM(max_tokens=5)
    a = CachedLLM(short, response_cache=cache).complete("q")
    b = CachedLLM(long, response_cache=cache).complete("q")
    assert (a.text, b.text) == ("text text", "text text text text text")


def test_chat_is_cached_too():
    inner = CountingLLM(is_chat_model=True)
    llm = CachedLLM(inner)
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You answer."),
        ChatMessage(role=MessageRole.USER, content="Hello?"),
    ]
    first = llm.chat(messages)
    second = llm.chat(messages)
    assert inner.calls == {"chat": 1}
    assert second.message.content == first.message.content
    assert second.message.role == MessageRole.ASSISTANT
    assert second.additional_kwargs["ragjet_cache"] == "exact"
    llm.chat(messages[1:])
    assert inner.calls == {"chat": 2}


def test_streaming_works_and_a_fully_read_stream_fills_the_cache():
    inner = CountingLLM()
    llm = CachedLLM(inner)
    chunks = list(llm.stream_complete("stream me"))
    assert "".join(c.delta for c in chunks) == "stream me" and len(chunks) == len("stream me")
    assert inner.calls == {"stream_complete": 1}
    again = list(llm.stream_complete("stream me"))
    assert [c.text for c in again] == ["stream me"] and again[0].delta == "stream me"
    assert llm.complete("stream me").additional_kwargs["ragjet_cache"] == "exact"
    assert inner.calls == {"stream_complete": 1}
    partial = llm.stream_complete("not read to the end")
    next(partial)
    partial.close()
    llm.complete("not read to the end")
    assert inner.calls == {"stream_complete": 2, "complete": 1}
    chat = list(llm.stream_chat([ChatMessage(role="user", content="hi")]))
    assert chat[-1].message.content  # the wrapped chat stream still works


def test_async_variants_use_the_same_cache():
    inner = CountingLLM()
    llm = CachedLLM(inner)

    async def run():
        a = await llm.acomplete("async question")
        b = await llm.acomplete("async question")
        c = await llm.achat([ChatMessage(role="user", content="async chat")])
        d = await llm.achat([ChatMessage(role="user", content="async chat")])
        chunks = [x async for x in await llm.astream_complete("async question")]
        return a, b, c, d, chunks

    a, b, c, d, chunks = asyncio.run(run())
    assert inner.calls == {"acomplete": 1, "achat": 1}
    assert a.text == b.text and b.additional_kwargs["ragjet_cache"] == "exact"
    assert c.message.content == d.message.content
    assert [x.text for x in chunks] == ["async question"]
    assert llm.complete("async question").additional_kwargs["ragjet_cache"] == "exact"


def test_semantic_cache_answers_a_rephrased_question(embedder):
    inner = CountingLLM(is_chat_model=True)
    semantic = ragjet.SemanticCache(384, threshold=0.9)
    llm = CachedLLM(
        inner,
        response_cache=False,
        semantic_cache=semantic,
        embed_model=RagjetEmbedding(embedder=embedder),
    )
    assert llm.response_cache is None
    first = llm.chat([ChatMessage(role="user", content="What is the capital of France?")])
    close = llm.chat([ChatMessage(role="user", content="what is the capital of france")])
    far = llm.chat([ChatMessage(role="user", content="How do I bake sourdough bread?")])
    assert inner.calls == {"chat": 2}
    assert close.additional_kwargs["ragjet_cache"] == "semantic"
    assert close.message.content == first.message.content
    assert "ragjet_cache" not in far.additional_kwargs
    # Another user of the same cache gets nothing from the first user.
    other = CachedLLM(
        inner,
        response_cache=False,
        semantic_cache=semantic,
        embed_model=RagjetEmbedding(embedder=embedder),
        user="someone-else",
    )
    other.chat([ChatMessage(role="user", content="What is the capital of France?")])
    assert inner.calls == {"chat": 3}


def test_semantic_lookup_of_a_long_prompt_reads_its_end(embedder):
    """A RAG prompt holds the same long context before two different
    questions: the semantic cache must tell them apart."""
    inner = CountingLLM()
    llm = CachedLLM(
        inner,
        response_cache=False,
        semantic_cache=ragjet.SemanticCache(384, threshold=0.95),
        embed_model=RagjetEmbedding(embedder=embedder),
    )
    context = "Context: " + " ".join(["ragjet embeds passages in Rust."] * 200)
    llm.complete(context + "\nQuestion: how fast is ingest?\nAnswer:")
    llm.complete(context + "\nQuestion: which licence applies?\nAnswer:")
    assert inner.calls == {"complete": 2}
    repeat = llm.complete(context + "\nQuestion: how fast is ingest?\nAnswer:")
    assert repeat.additional_kwargs["ragjet_cache"] == "semantic"
    assert inner.calls == {"complete": 2}


def test_an_over_long_prompt_is_cut_in_the_middle_within_the_budget():
    inner = CountingLLM()
    llm = CachedLLM(inner, max_prompt_tokens=50)
    prompt = "INSTRUCTIONS " + words(300) + " QUESTION?"
    assert llm.count_tokens(prompt) > 50
    answer = llm.complete(prompt).text  # MockLLM echoes what it received
    assert llm.count_tokens(answer) <= 50
    assert answer.startswith("INSTRUCTIONS ") and answer.endswith(" QUESTION?")
    assert "…" in answer
    assert llm.count_tokens(answer) >= 40  # the cut keeps close to the budget
    short = "fits easily"
    assert llm.complete(short).text == short


def test_an_over_long_prompt_raises_when_asked_to():
    llm = CachedLLM(CountingLLM(), max_prompt_tokens=10, on_overflow="error")
    with pytest.raises(PromptTooLongError, match="max_prompt_tokens=10"):
        llm.complete(words(50))
    assert issubclass(PromptTooLongError, ragjet.InvalidInputError)
    with pytest.raises(PromptTooLongError):
        llm.chat([ChatMessage(role="user", content=words(50))])
    with pytest.raises(ValueError):
        CachedLLM(CountingLLM(), on_overflow="ignore")


def test_an_over_long_chat_drops_old_turns_first():
    inner = CountingLLM(is_chat_model=True)
    llm = CachedLLM(inner, max_prompt_tokens=60)
    messages = [
        ChatMessage(role="system", content="SYSTEM rules"),
        ChatMessage(role="user", content="old " + words(40)),
        ChatMessage(role="assistant", content="older answer " + words(10)),
        ChatMessage(role="user", content="LAST question?"),
    ]
    answer = llm.chat(messages).message.content
    # MockLLM's chat echoes its messages_to_prompt rendering.
    assert "SYSTEM rules" in answer and "LAST question?" in answer
    assert "w39" not in answer  # the first user turn went first
    huge = [ChatMessage(role="system", content="S"), ChatMessage(role="user", content=words(200))]
    cut = llm.chat(huge).message.content
    assert "…" in cut and "w0" in cut and "w199" in cut


def test_telemetry_records_every_call_with_tokens_and_cache_status():
    telemetry = RecordingTelemetry()
    llm = CachedLLM(CountingLLM(max_tokens=3), telemetry=telemetry)
    llm.complete("one two three four")
    llm.complete("one two three four")
    (m1, p1, c1, s1, cached1), (m2, p2, c2, s2, cached2) = telemetry.llm_calls
    assert m1 == m2 == "unknown"  # MockLLM's model_name
    assert (cached1, cached2) == (False, True)
    assert p1 == p2 == llm.count_tokens("one two three four")
    assert c1 == c2 == llm.count_tokens("text text text")
    assert s1 >= 0 and s2 >= 0


def test_provider_usage_wins_over_counting():
    from llama_index.core.base.llms.types import CompletionResponse

    class Billing(CountingLLM):
        def complete(self, prompt, formatted=False, **kwargs):
            return CompletionResponse(
                text="ok", raw={"usage": {"prompt_tokens": 111, "completion_tokens": 7}}
            )

    telemetry = RecordingTelemetry()
    CachedLLM(Billing(), telemetry=telemetry).complete("anything")
    assert telemetry.llm_calls[0][1:3] == (111, 7)


def test_real_telemetry_accounts_the_calls_under_the_model_name():
    from llama_index.core.base.llms.types import LLMMetadata

    class Named(CountingLLM):
        @property
        def metadata(self):
            return LLMMetadata(model_name="ragjet-test-model")

    telemetry = ragjet.Telemetry()
    llm = CachedLLM(Named(), telemetry=telemetry)
    llm.complete("count me")
    llm.complete("count me")
    assert "ragjet-test-model" in telemetry.render()


def test_only_llama_index_llms_are_wrapped():
    with pytest.raises(TypeError):
        CachedLLM(object())


class BrokenCache:
    """A response cache whose storage fails, as a full disk tier would."""

    def get(self, *args):
        raise ragjet.StorageError("disk tier unreadable")

    def put(self, *args):
        raise ragjet.StorageError("disk tier full")


def test_a_failing_cache_does_not_fail_the_call(caplog):
    inner = CountingLLM()
    llm = CachedLLM(inner, response_cache=BrokenCache())
    with caplog.at_level("WARNING", logger="ragjet.llama_index.llm"):
        assert llm.complete("still answered").text == "still answered"
        assert llm.complete("still answered").text == "still answered"
    assert inner.calls == {"complete": 2}
    assert "cache lookup failed" in caplog.text and "not cached" in caplog.text


def test_bad_arguments_to_the_cache_still_raise():
    class Refusing(BrokenCache):
        def get(self, *args):
            raise ragjet.InvalidInputError("tenant must not be empty")

    with pytest.raises(ragjet.InvalidInputError):
        CachedLLM(CountingLLM(), response_cache=Refusing()).complete("q")


# -- production controls: retry, circuit breaker, dead letters ----------------


class FlakyLLM(MockLLM):
    """MockLLM that raises TimeoutError while ``down`` is set, or for the
    next ``fail_next`` calls; counts the calls that reach it."""

    down: bool = False
    fail_next: int = 0
    reached: int = 0

    def complete(self, prompt, formatted=False, **kwargs):
        self.reached += 1
        if self.down or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            raise TimeoutError(f"LLM timed out on {prompt!r}")
        return super().complete(prompt, formatted=formatted, **kwargs)


def test_flaky_llm_trips_the_breaker_recovers_and_loses_no_request(tmp_path):
    clock = ragjet.ManualClock(start=1_000.0)
    breaker = ragjet.CircuitBreaker("flaky-llm", consecutive_failures=3, open_for=30.0, clock=clock)
    retry = ragjet.RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=2.0, seed=11)
    letters = ragjet.DeadLetterStore(tmp_path / "llm-dead-letters.log", name="flaky")
    waits = []

    def sleep(seconds):  # back-off moves the manual clock: no real sleeping
        waits.append(seconds)
        clock.advance(seconds)

    inner = FlakyLLM()
    llm = CachedLLM(inner, retry=retry, breaker=breaker, dead_letters=letters, sleep=sleep)

    # A transient blip is retried away: answered, nothing dead-lettered.
    inner.fail_next = 1
    assert llm.complete("q0").text == "q0"
    assert (inner.reached, len(waits), len(letters)) == (2, 1, 0)
    assert breaker.state == "closed"

    # The LLM goes down: three timeouts open the circuit; the request is
    # stored before its error is raised, and the error names the letter.
    inner.down = True
    failed_ids = []
    with pytest.raises(TimeoutError) as info:
        llm.complete("q1")
    failed_ids.append(info.value.ragjet_dead_letter_id)
    assert inner.reached == 5 and breaker.state == "open"

    # While open, calls fail fast without reaching the LLM, and are stored too.
    with pytest.raises(ragjet.CircuitOpenError) as info:
        llm.complete("q2")
    failed_ids.append(info.value.ragjet_dead_letter_id)
    assert inner.reached == 5
    assert [x["id"] for x in letters.list()] == failed_ids
    assert [json.loads(x["payload"])["prompt"] for x in letters.list()] == ["q1", "q2"]

    # The LLM recovers; after open_for the breaker lets a probe through.
    inner.down = False
    clock.advance(30.0)
    assert breaker.state == "half_open"
    assert llm.complete("q3").text == "q3"
    assert breaker.state == "closed"

    # Re-driving answers every stored request and caches the answers.
    report = llm.redrive_dead_letters()
    assert sorted(report["redriven"]) == sorted(failed_ids) and report["failed"] == []
    assert len(letters) == 0
    reached = inner.reached
    assert llm.complete("q1").additional_kwargs.get("ragjet_cache") == "exact"
    assert llm.complete("q2").additional_kwargs.get("ragjet_cache") == "exact"
    assert inner.reached == reached


def test_permanent_errors_are_not_retried_nor_dead_lettered(tmp_path):
    class BadRequest(Exception):
        status_code = 400

    class Refusing(MockLLM):
        reached: int = 0

        def complete(self, prompt, formatted=False, **kwargs):
            self.reached += 1
            raise BadRequest("malformed")

    inner = Refusing()
    breaker = ragjet.CircuitBreaker("refusing", consecutive_failures=1)
    letters = ragjet.DeadLetterStore(tmp_path / "dl.log")
    llm = CachedLLM(
        inner,
        retry=ragjet.RetryPolicy(max_attempts=5),
        breaker=breaker,
        dead_letters=letters,
        sleep=lambda s: None,
    )
    with pytest.raises(BadRequest):
        llm.complete("x")
    assert inner.reached == 1 and len(letters) == 0
    assert breaker.state == "closed", "a bad request says nothing of the LLM's health"


def test_async_calls_retry_and_dead_letter(tmp_path):
    class AsyncFlaky(MockLLM):
        reached: int = 0

        async def acomplete(self, prompt, formatted=False, **kwargs):
            self.reached += 1
            raise ConnectionError("reset")

    inner = AsyncFlaky()
    letters = ragjet.DeadLetterStore(tmp_path / "dl.log")
    llm = CachedLLM(
        inner,
        retry=ragjet.RetryPolicy(max_attempts=2),
        dead_letters=letters,
        sleep=lambda s: None,
    )
    with pytest.raises(ConnectionError) as info:
        asyncio.run(llm.acomplete("y"))
    assert inner.reached == 2
    assert letters.get(info.value.ragjet_dead_letter_id)["attempts"] == 2


def test_is_transient_error_classifies_common_failures():
    from ragjet.llama_index.llm import is_transient_error

    class Http(Exception):
        def __init__(self, status):
            self.status_code = status

    class RateLimitError(Exception):
        pass

    assert is_transient_error(TimeoutError())
    assert is_transient_error(ConnectionError())
    assert is_transient_error(ragjet.Overloaded("busy"))
    assert is_transient_error(Http(429)) and is_transient_error(Http(503))
    assert not is_transient_error(Http(400)) and not is_transient_error(Http(-1))
    assert is_transient_error(RateLimitError())
    assert not is_transient_error(ValueError("bad"))
