"""The exception hierarchy of ragjet.

Every error ragjet raises is a :class:`RagjetError`, carrying the message of
the Rust error it stands for. The subclasses also derive from the built-in
exception a Python caller would expect (``ValueError`` for bad arguments,
``OSError`` for a model folder that cannot be read, ``RuntimeError`` for a
device), so code written against the built-ins keeps working.
"""

__all__ = [
    "CircuitOpenError",
    "DeadlineExceededError",
    "DeviceError",
    "InvalidInput",
    "InvalidInputError",
    "ModelLoadError",
    "OutOfMemoryError",
    "Overloaded",
    "OverloadedError",
    "QueueFullError",
    "RagjetError",
    "RateLimitedError",
    "StorageError",
]


class RagjetError(Exception):
    """Base class of every error raised by ragjet.

    Raised as such only for failures with no better class, for example a
    tensor operation failing inside the model, or an internal error (a bug:
    a Rust panic is reported this way rather than crashing the interpreter).
    """

    __module__ = "ragjet"


class InvalidInputError(RagjetError, ValueError):
    """An argument is out of range or of the wrong kind: ``None`` or a
    non-``str`` among the texts, an unknown prompt name, ``batch_size=0``
    or ``k=0``, an unknown device or precision name, an array that is not
    C-contiguous float32 of the right shape, a NaN in a vector, a
    malformed metadata filter."""

    __module__ = "ragjet"


class ModelLoadError(RagjetError, OSError):
    """A model folder is missing, incomplete, corrupt or unsupported, or the
    default model package is not installed."""

    __module__ = "ragjet"


class DeviceError(RagjetError, RuntimeError):
    """The requested device cannot be used: no CUDA in this build, no such
    GPU, or no NVIDIA driver."""

    __module__ = "ragjet"


class OutOfMemoryError(DeviceError):
    """The device ran out of memory on a single text, so splitting the batch
    further cannot help. Smaller ``max_seq_length`` or another device can."""

    __module__ = "ragjet"


class OverloadedError(RagjetError):
    """The call was refused without being run: retrying later may succeed;
    shedding load will. The subclasses say why. ``retry_after`` is the
    number of seconds to wait before a retry can succeed when the refuser
    knows it (a rate limit, an open circuit), else ``None``. Raised as such
    for a full model pool."""

    __module__ = "ragjet"
    retry_after: "float | None" = None


class RateLimitedError(OverloadedError):
    """A rate limiter (a ``RateLimiter``, or an ``Engine``'s
    ``[control.rate_limit]``) refused the call: the key's token bucket is
    empty (or would not refill within the timeout). ``retry_after`` says in
    seconds when the tokens are back."""

    __module__ = "ragjet"
    retry_after: "float | None" = 0.0


class CircuitOpenError(OverloadedError):
    """A circuit breaker (a ``CircuitBreaker``, or an ``Engine``'s
    ``[control.breaker]``) is open: the guarded service failed too often and
    is not called. ``retry_after`` says in seconds when a probe will be let
    through."""

    __module__ = "ragjet"
    retry_after: "float | None" = 0.0


class QueueFullError(OverloadedError):
    """The model's queue is full (``queue.capacity`` items waiting): the
    engine sheds the request at once instead of queueing it behind work it
    cannot finish in time. ``retry_after`` is ``None``: room depends on
    other callers."""

    __module__ = "ragjet"


class DeadlineExceededError(OverloadedError, TimeoutError):
    """The request waited in the model's queue past its deadline
    (``queue.timeout_ms``) and was dropped unserved. Also a
    ``TimeoutError``."""

    __module__ = "ragjet"


#: The name earlier versions used; the same class.
Overloaded = OverloadedError


class StorageError(RagjetError, OSError):
    """Reading or writing saved state failed: a saved index, engine
    directory or disk cache is missing, damaged, truncated or of an unknown
    format, or the disk refused a write. ragjet refuses damaged state
    rather than returning wrong answers from it."""

    __module__ = "ragjet"


#: The name issue 17's API uses; the same class.
InvalidInput = InvalidInputError
