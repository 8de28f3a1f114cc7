"""LlamaIndex instrumentation handlers that feed ``ragjet.Telemetry``.

>>> from llama_index.core.instrumentation import get_dispatcher
>>> telemetry = ragjet.Telemetry()
>>> root = get_dispatcher()
>>> root.add_span_handler(RagjetSpanHandler(telemetry))
>>> root.add_event_handler(RagjetEventHandler(telemetry))
>>> telemetry.serve_metrics(9464)      # Prometheus scrapes /metrics

LlamaIndex swallows exceptions raised inside handlers, so a handler that
fails is silent; ``recent`` (spans) and ``counts`` / ``llm_calls`` (events)
say what each handler saw.
"""

import threading
from collections import deque
from datetime import datetime
from typing import Any, NamedTuple, Optional

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span.simple import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

import ragjet
from ragjet.llama_index.llm import ACCOUNTED_TAG, _usage

__all__ = ["LLMCall", "RagjetEventHandler", "RagjetSpanHandler", "SpanRecord"]

#: How many finished spans / LLM calls a handler remembers for inspection.
DEFAULT_MAX_RECORDS = 10_000


class SpanRecord(NamedTuple):
    """A finished LlamaIndex span, as recorded into telemetry."""

    name: str  #: ``Class.method``, e.g. ``RetrieverQueryEngine.query``
    seconds: float
    ok: bool  #: False when the span ended with an exception
    id: str
    parent_id: Optional[str]


class LLMCall(NamedTuple):
    """An LLM call seen through its start and end events."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def _span_name(span_id: str) -> str:
    # Dispatcher span ids are "<Class>.<method>-<uuid4>" (or "<qualname>-<uuid4>").
    return span_id.split("-", 1)[0]


class RagjetSpanHandler(BaseSpanHandler[SimpleSpan]):
    """Times every LlamaIndex span (each instrumented method: a query
    engine's ``query``, a retriever's ``_retrieve``, an embedding call, an
    LLM call...) and records it with ``Telemetry.record_span(name, seconds,
    ok)``, which becomes ragjet's per-span Prometheus histogram and tracing
    span. The last ``max_records`` spans stay in ``recent``.
    """

    telemetry: Any = Field(default=None, exclude=True)
    max_records: int = Field(default=DEFAULT_MAX_RECORDS)
    _recent: deque[SpanRecord] = PrivateAttr()

    def __init__(
        self, telemetry: Optional[Any] = None, max_records: int = DEFAULT_MAX_RECORDS
    ) -> None:
        """``telemetry=None`` uses the process-wide ``ragjet.Telemetry()``."""
        super().__init__(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
        self.telemetry = telemetry if telemetry is not None else ragjet.Telemetry()
        self.max_records = max_records
        self._recent = deque(maxlen=max_records)

    @classmethod
    def class_name(cls) -> str:
        return "RagjetSpanHandler"

    @property
    def recent(self) -> list:
        """The last finished spans, oldest first (a copy)."""
        with self.lock:
            return list(self._recent)

    def new_span(
        self,
        id_: str,
        bound_args: Any,
        instance: Optional[Any] = None,
        parent_span_id: Optional[str] = None,
        tags: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> SimpleSpan:
        return SimpleSpan(id_=id_, parent_id=parent_span_id, tags=tags or {})

    def _finish(self, id_: str, ok: bool) -> Optional[SimpleSpan]:
        with self.lock:
            span = self.open_spans.get(id_)
        if span is None:
            return None
        span.end_time = datetime.now()
        span.duration = (span.end_time - span.start_time).total_seconds()
        record = SpanRecord(_span_name(id_), span.duration, ok, id_, span.parent_id)
        self.telemetry.record_span(record.name, record.seconds, ok)
        with self.lock:
            self._recent.append(record)
        return span

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: Any,
        instance: Optional[Any] = None,
        result: Optional[Any] = None,
        **kwargs: Any,
    ) -> Optional[SimpleSpan]:
        return self._finish(id_, True)

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: Any,
        instance: Optional[Any] = None,
        err: Optional[BaseException] = None,
        **kwargs: Any,
    ) -> Optional[SimpleSpan]:
        return self._finish(id_, False)


class RagjetEventHandler(BaseEventHandler):
    """Counts LlamaIndex instrumentation events by kind (``counts``) and turns
    each LLM call (a completion or chat start/end pair) into
    ``Telemetry.record_llm_call``: tokens (the provider's usage when the
    response carries it, else counted with LlamaIndex's tokenizer), latency,
    and the cost ragjet prices from them.

    Calls made through a ``CachedLLM`` that has a ``telemetry`` are tagged
    and skipped here: that wrapper already recorded them (with the cache
    hits, which never reach the wrapped LLM).
    """

    telemetry: Any = Field(default=None, exclude=True)
    max_records: int = Field(default=DEFAULT_MAX_RECORDS)
    _counts: dict[str, int] = PrivateAttr()
    _llm_calls: deque[LLMCall] = PrivateAttr()
    _starts: dict[str, BaseEvent] = PrivateAttr()
    _lock: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr(default=None)

    def __init__(
        self, telemetry: Optional[Any] = None, max_records: int = DEFAULT_MAX_RECORDS
    ) -> None:
        """``telemetry=None`` uses the process-wide ``ragjet.Telemetry()``."""
        super().__init__()
        self.telemetry = telemetry if telemetry is not None else ragjet.Telemetry()
        self.max_records = max_records
        self._counts = {}
        self._llm_calls = deque(maxlen=max_records)
        self._starts = {}
        self._lock = threading.Lock()

    @classmethod
    def class_name(cls) -> str:
        return "RagjetEventHandler"

    @property
    def counts(self) -> dict[str, int]:
        """Events seen, by class name (a copy)."""
        with self._lock:
            return dict(self._counts)

    @property
    def llm_calls(self) -> list:
        """The last LLM calls recorded into telemetry, oldest first (a copy)."""
        with self._lock:
            return list(self._llm_calls)

    def _count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            from llama_index.core.utils import get_tokenizer

            self._tokenizer = get_tokenizer()
        return len(self._tokenizer(text))

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        with self._lock:
            name = event.class_name()
            self._counts[name] = self._counts.get(name, 0) + 1
            if event.tags.get(ACCOUNTED_TAG):
                return
            if isinstance(event, (LLMCompletionStartEvent, LLMChatStartEvent)):
                self._starts[event.span_id or ""] = event
                if len(self._starts) > self.max_records:  # ends that never came
                    del self._starts[next(iter(self._starts))]
                return
            if not isinstance(event, (LLMCompletionEndEvent, LLMChatEndEvent)):
                return
            start = self._starts.pop(event.span_id or "", None)
        if start is None or event.response is None:
            return
        seconds = max((event.timestamp - start.timestamp).total_seconds(), 0.0)
        usage = _usage(getattr(event.response, "raw", None))
        if usage is None:
            if isinstance(event, LLMCompletionEndEvent):
                prompt, answer = event.prompt, event.response.text
            else:
                prompt = "\n".join(m.content or "" for m in event.messages)
                answer = event.response.message.content or ""
            usage = (self._count_tokens(prompt), self._count_tokens(answer or ""))
        model_dict = start.model_dict or {}
        model = str(
            model_dict.get("model")
            or model_dict.get("model_name")
            or model_dict.get("class_name")
            or "unknown"
        )
        call = LLMCall(model, usage[0], usage[1], seconds)
        self.telemetry.record_llm_call(model, usage[0], usage[1], seconds, False)
        with self._lock:
            self._llm_calls.append(call)
