"""Plans, quotas and rate limits: the functions other apps call.

For the inference app
---------------------
``admit_prediction(*, user, api_key) -> Admission``
        Call once per prediction request (predict API, ``/v2/…/infer``, the browser's try-it) after
    authentication and input validation, *before* anything is queued or run. It counts the request in every
    window that applies (the user's minute and day, the key's minute and day caps) all-or-nothing and checks
    this month's compute. When a limit is used up it raises ``QuotaExceeded`` and nothing was counted.
    ``QuotaExceeded`` is a DRF ``APIException`` (429, ``{"detail", "limit", "retry_after"}``, ``Retry-
    After``), so DRF views just let it propagate; an app with plain Django views formats it in its own
    middleware (``process_exception``). ``exc.headers`` holds ``Retry-After`` and the ``RateLimit-*`` headers.
    ``portal.middleware.RateLimitHeadersMiddleware`` adds the admission's ``RateLimit-*`` headers to the
    response by itself.

``portal.usage.usage_record(usages: list[Usage])``
        Call from inference's ledger once per ended prediction, with plain values (see ``portal/usage.py``).

``portal.authentication.authenticate_bearer(header) -> ApiKey``
    The one bearer check (cached; revocation takes effect on the next request).

For the marketplace
-------------------
``plan_upload_limit_for(user) -> int`` (bytes: the plan's, with the user's overrides; the marketplace caps it
by the server's own limit) and ``private_model_limit_for(user) -> int``.

Backends
--------
With Redis (``QUOTA_BACKEND = "redis"``, the default when ``REDIS_URL`` is set) one Lua script checks and
bumps all windows atomically. Without it (``"sql"``) each window is a ``UsageCounter`` row bumped by a
conditional ``UPDATE … WHERE used < limit`` inside one transaction, rolled back if any window is full. Both
are fixed windows (UTC minute, UTC day, calendar month).
"""

from __future__ import annotations

import calendar
import contextvars
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest
from redis.exceptions import RedisError
from rest_framework import exceptions, status

from . import metrics, process_cache
from .models import ApiKey, Plan, Quota, UsageCounter

logger = logging.getLogger(__name__)

LIMIT_DESCRIPTIONS = {
    "requests_per_minute": "requests per minute",
    "requests_per_day": "requests per day",
    "key_requests_per_minute": "requests per minute for this API key",
    "key_requests_per_day": "requests per day for this API key",
    "compute_seconds_per_month": "compute seconds per month",
    "tokens_per_minute": "tokens per minute",
    "tokens_per_day": "tokens per day",
}


# --- Limits -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    plan: str
    requests_per_minute: int
    requests_per_day: int
    compute_seconds_per_month: int
    max_upload_bytes: int
    max_private_models: int
    tokens_per_minute: int
    tokens_per_day: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def limits_cache_key(user_id: int) -> str:
    return f"portal:limits:{user_id}"


def quota_for(user) -> Quota:
    """The user's quota row, created on the default plan if missing."""
    quota = Quota.objects.select_related("plan").filter(user_id=user.pk).first()
    if quota is None:
        quota, _ = Quota.objects.select_related("plan").get_or_create(
            user_id=user.pk, defaults={"plan": Plan.default()}
        )
    return quota


def effective_limits(user) -> Limits:
    """The user's plan with overrides applied; cached, and invalidated when a plan or quota changes."""
    if user is None or not user.is_authenticated:
        plan = Plan.default()
        return Limits(plan=plan.name, **{name: getattr(plan, name) for name in Quota.LIMIT_FIELDS})

    def load() -> dict:
        quota = quota_for(user)
        return Limits(plan=quota.plan.name, **quota.effective()).as_dict()

    return Limits(**process_cache.cached(limits_cache_key(user.pk), load, settings.ACCESS_CACHE_SECONDS))


def plan_upload_limit_for(user) -> int:
    """Largest model file, in bytes, this user's plan (with overrides) allows; the server may cap it lower."""
    return effective_limits(user).max_upload_bytes


def private_model_limit_for(user) -> int:
    """How many private models this user may own."""
    return effective_limits(user).max_private_models


def invalidate_limits(user_ids) -> None:
    """Forget cached limits now and again at commit, so no request re-caches the old values in between."""
    process_cache.forget([limits_cache_key(user_id) for user_id in user_ids])


# --- Windows ------------------------------------------------------------------------------------------------


def minute_number(now: float) -> int:
    return int(now // 60)


def day_number(now: float) -> int:
    return int(now // 86400)


def month_number(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.year * 12 + moment.month - 1


def seconds_to_next_month(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start_of_month = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    return max(1, math.ceil(start_of_month + days * 86400 - now))


@dataclass
class Window:
    """One fixed window that a prediction request counts in."""

    limit_name: str
    subject: str  # "u:<user id>" or "k:<key id>"
    kind: str  # "minute" or "day"
    limit: int
    number: int
    reset: int  # seconds until the window ends
    used: int = 0

    @property
    def counter_key(self) -> str:
        return f"{self.subject}:{self.kind}"

    @property
    def redis_key(self) -> str:
        return f"mpq:{self.subject}:{self.kind}:{self.number}"

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


def windows_for(user, api_key: ApiKey | None, limits: Limits, now: float) -> list[Window]:
    minute, day = minute_number(now), day_number(now)
    to_minute_end, to_day_end = 60 - int(now % 60), 86400 - int(now % 86400)
    windows = [
        Window(
            "requests_per_minute", f"u:{user.pk}", "minute", limits.requests_per_minute, minute, to_minute_end
        ),
        Window("requests_per_day", f"u:{user.pk}", "day", limits.requests_per_day, day, to_day_end),
    ]
    if api_key is not None and api_key.requests_per_minute is not None:
        windows.append(
            Window(
                "key_requests_per_minute",
                f"k:{api_key.pk}",
                "minute",
                api_key.requests_per_minute,
                minute,
                to_minute_end,
            )
        )
    if api_key is not None and api_key.requests_per_day is not None:
        windows.append(
            Window(
                "key_requests_per_day", f"k:{api_key.pk}", "day", api_key.requests_per_day, day, to_day_end
            )
        )
    return windows


def compute_counter_key(user_id: int) -> str:
    return f"u:{user_id}:compute"


def compute_redis_key(user_id: int, month: int) -> str:
    return f"mpq:u:{user_id}:compute:{month}"


def rate_limit_headers(window: Window) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(window.limit),
        "RateLimit-Remaining": str(window.remaining),
        "RateLimit-Reset": str(window.reset),
    }


def tightest(windows: list[Window]) -> Window:
    # The window with the fewest requests left is the one a client must pace itself by.
    return min(windows, key=lambda w: (w.remaining, w.reset))


# --- Admission ----------------------------------------------------------------------------------------------


@dataclass
class Admission:
    """A counted prediction request: the windows it counted in, after counting."""

    windows: list[Window]
    compute_used_ms: int = 0
    # With `then`: each list's length after its push.
    pushed: list[int] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return rate_limit_headers(tightest(self.windows))


class QuotaUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The rate limiter is unavailable; retry in a few seconds."
    default_code = "quota_unavailable"
    wait = 5


class QuotaExceeded(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "quota_exceeded"

    def __init__(self, *, limit_name: str, limit: int, retry_after: int, windows: list[Window]):
        metrics.quota_refusals_total.labels(limit_name).inc()
        self.limit_name = limit_name
        self.limit = limit
        self.retry_after = retry_after
        self.wait = retry_after  # DRF's exception handler sends it as Retry-After
        self.windows = windows
        self.message = (
            f"Quota exhausted: {limit_name} ({limit} {LIMIT_DESCRIPTIONS[limit_name]}). "
            f"Try again in {retry_after} s."
        )
        super().__init__({"detail": self.message, "limit": limit_name, "retry_after": retry_after})

    @property
    def headers(self) -> dict[str, str]:
        rejected = next((w for w in self.windows if w.limit_name == self.limit_name), None)
        headers = rate_limit_headers(rejected or tightest(self.windows))
        if rejected is None:  # the month's compute: requests remain but none may run
            headers["RateLimit-Remaining"] = "0"
            headers["RateLimit-Reset"] = str(self.retry_after)
        headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass
class RequestQuotaState:
    """What the admission and authentication learned during one API request, for the headers middleware."""

    admission: Admission | None = None
    rejection: QuotaExceeded | None = None
    api_key: ApiKey | None = None


current_request_state: contextvars.ContextVar[RequestQuotaState | None] = contextvars.ContextVar(
    "portal_quota_state", default=None
)


def quota_backend() -> str:
    return getattr(settings, "QUOTA_BACKEND", "") or ("redis" if settings.REDIS_URL else "sql")


def admit_prediction(*, user, api_key: ApiKey | None, then: list[tuple[str, bytes]] = ()) -> Admission:
    """Count one prediction request in every limit that applies, or raise QuotaExceeded counting nothing.

    `then`: Redis lists to push onto once admitted, as (key, value) pairs. With the Redis backend the pushes
    run in the admission's own script: a refused request queues nothing, and an admitted one costs no second
    round trip. The lists' lengths after the pushes come back in `Admission.pushed`."""
    now = time.time()
    limits = effective_limits(user)
    windows = windows_for(user, api_key, limits, now)
    compute_limit_ms = limits.compute_seconds_per_month * 1000
    state = current_request_state.get()
    try:
        if quota_backend() == "redis":
            admission = _admit_redis(user.pk, windows, compute_limit_ms, now, list(then))
        else:
            admission = _admit_sql(user.pk, windows, compute_limit_ms, now)
            if then:
                pipe = redis_client().pipeline(transaction=False)
                for key, value in then:
                    pipe.rpush(key, value)
                admission.pushed = pipe.execute()
    except QuotaExceeded as rejection:
        if state is not None:
            state.rejection = rejection
        raise
    except RedisError as error:
        # Without its counters no request can be admitted safely: a retryable 503, never a 500.
        logger.error("quota admission failed: Redis is unavailable (%s)", type(error).__name__)
        raise QuotaUnavailable() from None
    if state is not None:
        state.admission = admission
    return admission


# Give back one request in each window, never below zero, and only in the window it was counted in (a
# window that has since ended is another count).
REFUND_SCRIPT = """
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used > 0 then redis.call('DECR', key) end
end
return 0
"""


def admission_refund(admission: Admission) -> None:
    """Give back what an admission counted: the request was refused after all (its model's queue was full),
    so it costs no quota. Best effort: a counter store hiccup leaves the request counted."""
    windows = admission.windows
    try:
        if quota_backend() == "redis":
            redis_script("refund", REFUND_SCRIPT)(keys=[w.redis_key for w in windows], args=[])
        else:
            for window in windows:
                UsageCounter.objects.filter(key=window.counter_key, window=window.number, used__gt=0).update(
                    used=F("used") - 1
                )
    except Exception as error:
        logger.error("could not give back a refused request's quota (%s)", type(error).__name__)
        return
    for window in windows:
        window.used = max(0, window.used - 1)


def _compute_rejection(windows: list[Window], compute_limit_ms: int, now: float) -> QuotaExceeded:
    return QuotaExceeded(
        limit_name="compute_seconds_per_month",
        limit=compute_limit_ms // 1000,
        retry_after=seconds_to_next_month(now),
        windows=windows,
    )


def _window_rejection(window: Window, windows: list[Window]) -> QuotaExceeded:
    return QuotaExceeded(
        limit_name=window.limit_name, limit=window.limit, retry_after=window.reset, windows=windows
    )


# KEYS: n windows, the month's compute, then the lists to push onto once admitted. ARGV: n, each window's
# limit and expiry, the compute limit, then the values to push. Returns {0, used…, compute, lengths…} when
# admitted, {i, used_i} when window i is full, {-1, used} when the month's compute is spent, {-2} when the
# compute counter is not in Redis yet (the caller seeds it from PostgreSQL and retries).
ADMIT_SCRIPT = """
local n = tonumber(ARGV[1])
local compute_limit = tonumber(ARGV[2 * n + 2])
local compute = redis.call('GET', KEYS[n + 1])
if not compute then return {-2} end
if tonumber(compute) >= compute_limit then return {-1, tonumber(compute)} end
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + 1 > tonumber(ARGV[2 * i]) then return {i, used} end
end
local result = {0}
for i = 1, n do
  local used = redis.call('INCR', KEYS[i])
  if used == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  result[i + 1] = used
end
result[n + 2] = tonumber(compute)
for j = n + 2, #KEYS do
  result[#result + 1] = redis.call('RPUSH', KEYS[j], ARGV[j + n + 1])
end
return result
"""

_scripts: dict[str, object] = {}


def forget_redis_scripts() -> None:
    """Drop the registered Lua scripts: the next call registers them on whatever `redis_client()` is then."""
    _scripts.clear()


def redis_client():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def redis_script(name: str, source: str):
    """A Lua script registered once per process (`forget_redis_scripts` starts over)."""
    if name not in _scripts:
        _scripts[name] = redis_client().register_script(source)
    return _scripts[name]


def _admit_redis(
    user_id: int, windows: list[Window], compute_limit_ms: int, now: float, then: list[tuple[str, bytes]]
) -> Admission:
    month = month_number(now)
    keys = [w.redis_key for w in windows] + [compute_redis_key(user_id, month)] + [key for key, _ in then]
    args: list = [len(windows)]
    for w in windows:
        args += [w.limit, w.reset + 5]
    args.append(compute_limit_ms)
    args += [value for _, value in then]
    script = redis_script("admit", ADMIT_SCRIPT)
    result = script(keys=keys, args=args)
    if result[0] == -2:
        _seed_compute_in_redis(user_id, month, now)
        result = script(keys=keys, args=args)
    code = result[0]
    if code == -1:
        raise _compute_rejection(windows, compute_limit_ms, now)
    if code > 0:
        full = windows[code - 1]
        full.used = int(result[1])
        raise _window_rejection(full, windows)
    count = len(windows)
    for w, used in zip(windows, result[1 : count + 1], strict=True):
        w.used = int(used)
    return Admission(
        windows=windows, compute_used_ms=int(result[count + 1]), pushed=list(result[count + 2 :])
    )


def _seed_compute_in_redis(user_id: int, month: int, now: float) -> None:
    """Copy this month's charged compute from PostgreSQL (the record) into Redis unless it is there."""
    row = UsageCounter.objects.filter(key=compute_counter_key(user_id)).values_list("window", "used").first()
    used = row[1] if row and row[0] == month else 0
    redis_client().set(
        compute_redis_key(user_id, month), used, nx=True, ex=seconds_to_next_month(now) + 86400
    )


def _admit_sql(user_id: int, windows: list[Window], compute_limit_ms: int, now: float) -> Admission:
    month = month_number(now)
    with transaction.atomic():
        compute = (
            UsageCounter.objects.filter(key=compute_counter_key(user_id))
            .values_list("window", "used")
            .first()
        )
        compute_used = compute[1] if compute and compute[0] == month else 0
        if compute_used >= compute_limit_ms:
            raise _compute_rejection(windows, compute_limit_ms, now)
        # Always in the same order, so two requests of one user queue on the row locks instead of deadlocking.
        for window in windows:
            if not _bump_counter(window):
                window.used = _counter_used(window)
                raise _window_rejection(window, windows)  # rolls back the windows bumped so far
        used = dict(
            UsageCounter.objects.filter(key__in=[w.counter_key for w in windows]).values_list("key", "used")
        )
    for window in windows:
        window.used = used.get(window.counter_key, 0)
    return Admission(windows=windows, compute_used_ms=compute_used)


def _bump_counter(window: Window) -> bool:
    if window.limit < 1:
        return False
    if _conditional_bump(window):
        return True
    # The subject's first request ever: make its counter row, then count.
    UsageCounter.objects.bulk_create(
        [UsageCounter(key=window.counter_key, window=window.number, used=0)], ignore_conflicts=True
    )
    return _conditional_bump(window)


def _conditional_bump(window: Window) -> bool:
    """One conditional UPDATE: start a new window at 1, or add 1 if that stays within the limit."""
    return bool(
        UsageCounter.objects.filter(key=window.counter_key)
        .filter(~Q(window=window.number) | Q(used__lt=window.limit))
        .update(
            used=Case(When(window=window.number, then=F("used") + 1), default=Value(1)),
            window=Value(window.number),
        )
    )


def _counter_used(window: Window) -> int:
    row = UsageCounter.objects.filter(key=window.counter_key).values_list("window", "used").first()
    return row[1] if row and row[0] == window.number else 0


# --- Reading the current windows (headers on uncounted calls, the usage page) -------------------------------


def current_windows(user, api_key: ApiKey | None = None, *, now: float | None = None) -> list[Window]:
    """The user's (and key's) windows with what is used in them now, without counting anything."""
    now = time.time() if now is None else now
    windows = windows_for(user, api_key, effective_limits(user), now)
    if quota_backend() == "redis":
        values = redis_client().mget([w.redis_key for w in windows])
        for window, value in zip(windows, values, strict=True):
            window.used = int(value or 0)
    else:
        rows = {
            key: (number, used)
            for key, number, used in UsageCounter.objects.filter(
                key__in=[w.counter_key for w in windows]
            ).values_list("key", "window", "used")
        }
        for window in windows:
            number, used = rows.get(window.counter_key, (None, 0))
            window.used = used if number == window.number else 0
    return windows


def current_minute_headers(user) -> dict[str, str]:
    """RateLimit headers for an API call that is not counted: the caller's minute window as it stands."""
    now = time.time()
    limits = effective_limits(user)
    window = windows_for(user, None, limits, now)[0]
    if quota_backend() == "redis":
        window.used = int(redis_client().get(window.redis_key) or 0)
    else:
        window.used = _counter_used(window)
    return rate_limit_headers(window)


def compute_used_ms(user, *, now: float | None = None) -> int:
    """This month's charged compute, from the record in the database."""
    now = time.time() if now is None else now
    row = UsageCounter.objects.filter(key=compute_counter_key(user.pk)).values_list("window", "used").first()
    return int(row[1]) if row and row[0] == month_number(now) else 0


# --- Tokens (generative models) -----------------------------------------------------------------------------


@dataclass
class TokenReservation:
    """Tokens set aside for one generative call at admission: its prompt plus its max_tokens. The call gives
    back what it did not use (`tokens_settle`), so a user's calls together never pass a token limit."""

    windows: list[Window]
    tokens: int
    settled: bool = False


def token_windows(user, limits: Limits, now: float) -> list[Window]:
    to_minute_end, to_day_end = 60 - int(now % 60), 86400 - int(now % 86400)
    return [
        Window(
            "tokens_per_minute",
            f"u:{user.pk}",
            "tokens-minute",
            limits.tokens_per_minute,
            minute_number(now),
            to_minute_end,
        ),
        Window(
            "tokens_per_day", f"u:{user.pk}", "tokens-day", limits.tokens_per_day, day_number(now), to_day_end
        ),
    ]


# KEYS: the token windows. ARGV: the tokens, then each window's limit and expiry. Returns {0, used…} when
# reserved, {i, used_i} when window i has not that many tokens left (nothing is reserved then).
RESERVE_TOKENS_SCRIPT = """
local tokens = tonumber(ARGV[1])
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used + tokens > tonumber(ARGV[2 * i]) then return {i, used} end
end
local result = {0}
for i = 1, #KEYS do
  local used = redis.call('INCRBY', KEYS[i], tokens)
  if used == tokens then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  result[i + 1] = used
end
return result
"""
# KEYS: the token windows the reservation counted in; ARGV: the tokens given back.
RETURN_TOKENS_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], ARGV[1]) end
end
return 0
"""


def tokens_reserve(*, user, tokens: int) -> TokenReservation:
    """Set `tokens` aside in the user's token windows (minute and day), all or nothing, or raise
    QuotaExceeded reserving nothing."""
    now = time.time()
    windows = token_windows(user, effective_limits(user), now)
    state = current_request_state.get()
    try:
        if quota_backend() == "redis":
            args: list = [tokens]
            for w in windows:
                args += [w.limit, w.reset + 5]
            result = redis_script("reserve_tokens", RESERVE_TOKENS_SCRIPT)(
                keys=[w.redis_key for w in windows], args=args
            )
            if result[0]:
                full = windows[result[0] - 1]
                full.used = int(result[1])
                raise _window_rejection(full, windows)
            for window, used in zip(windows, result[1:], strict=True):
                window.used = int(used)
        else:
            with transaction.atomic():
                for window in windows:
                    if not _add_to_counter(window, tokens):
                        window.used = _counter_used(window)
                        raise _window_rejection(window, windows)
            for window in windows:
                window.used = _counter_used(window)
    except QuotaExceeded as rejection:
        if state is not None:
            state.rejection = rejection
        raise
    except RedisError as error:
        logger.error("token reservation failed: Redis is unavailable (%s)", type(error).__name__)
        raise QuotaUnavailable() from None
    return TokenReservation(windows=windows, tokens=tokens)


def tokens_settle(reservation: TokenReservation, *, used: int) -> None:
    """The call is over and used `used` tokens: give the rest of its reservation back (once)."""
    if reservation.settled:
        return
    reservation.settled = True
    unused = max(0, reservation.tokens - used)
    if not unused:
        return
    try:
        if quota_backend() == "redis":
            redis_script("return_tokens", RETURN_TOKENS_SCRIPT)(
                keys=[w.redis_key for w in reservation.windows], args=[unused]
            )
            return
        for window in reservation.windows:
            UsageCounter.objects.filter(key=window.counter_key, window=window.number).update(
                used=Greatest(F("used") - unused, Value(0))
            )
    except RedisError as error:  # the tokens stay counted: the limit errs on the safe side
        logger.error("could not give back %d tokens: Redis is unavailable (%s)", unused, type(error).__name__)


def _add_to_counter(window: Window, amount: int) -> bool:
    """Add `amount` to the window's counter if that stays within its limit (a new window starts at it)."""
    if amount > window.limit:
        return False

    def add() -> bool:
        return bool(
            UsageCounter.objects.filter(key=window.counter_key)
            .filter(~Q(window=window.number) | Q(used__lte=window.limit - amount))
            .update(
                used=Case(When(window=window.number, then=F("used") + amount), default=Value(amount)),
                window=Value(window.number),
            )
        )

    if add():
        return True
    UsageCounter.objects.bulk_create(
        [UsageCounter(key=window.counter_key, window=window.number, used=0)], ignore_conflicts=True
    )
    return add()


def current_token_windows(user, *, now: float | None = None) -> list[Window]:
    """The user's token windows (minute, day) with what is used in them now, reservations included."""
    now = time.time() if now is None else now
    windows = token_windows(user, effective_limits(user), now)
    if quota_backend() == "redis":
        for window, value in zip(windows, redis_client().mget([w.redis_key for w in windows]), strict=True):
            window.used = int(value or 0)
    else:
        for window in windows:
            window.used = _counter_used(window)
    return windows
