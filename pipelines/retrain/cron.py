"""Cron expressions with the meaning cron gives them, for ``tunepipe schedule``.

Standard five-field cron (``minute hour day month weekday``, plus ``@daily`` and friends) with
the meaning cron, systemd users and Kubernetes CronJobs give them, so the same string can move
between ``infra/`` schedules unchanged. APScheduler counts weekdays from Monday and ANDs day of
month with day of week; both differences are handled (or refused) here.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from pipelines.errors import ConfigError

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_CRON_FIX = (
    'give five fields "minute hour day-of-month month day-of-week", e.g. "0 3 * * *" '
    "for 03:00 every day"
)


def parse_cron(expr: str, timezone: str | None = None) -> CronTrigger:
    """Parse a five-field cron expression (or ``@daily`` etc.) into an APScheduler trigger.

    Weekday numbers mean what they mean to cron (0 and 7 are Sunday); APScheduler 3 counts
    from Monday, so they are translated to names first.

    Args:
        expr: The expression, e.g. ``"0 3 * * *"``.
        timezone: IANA time zone the expression is read in (default: the machine's).

    Returns:
        The trigger.

    Raises:
        ConfigError: The expression or the time zone is invalid (key ``--cron`` or
            ``--timezone``), or it restricts both day of month and day of week.

    """
    zone = _zone(timezone)
    text = _MACROS.get(expr.strip().lower(), expr)
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(
            f"{expr!r} has {len(fields)} fields, a cron expression has 5",
            key="--cron",
            fix=_CRON_FIX,
        )
    minute, hour, day, month, weekday = fields
    if not day.startswith(("*", "?")) and not weekday.startswith(("*", "?")):
        # cron and Kubernetes fire when EITHER field matches, APScheduler only when both do:
        # rather than a schedule that means different things in different places, refuse it.
        raise ConfigError(
            f"{expr!r} restricts both day of month and day of week, which cron ORs and "
            "APScheduler ANDs",
            key="--cron",
            fix='restrict only one of them and leave the other "*"',
        )
    try:
        weekday = _cron_weekdays(weekday)
        return CronTrigger.from_crontab(f"{minute} {hour} {day} {month} {weekday}", timezone=zone)
    except ValueError as exc:
        raise ConfigError(
            f"{expr!r} is not a valid cron expression: {exc}", key="--cron", fix=_CRON_FIX
        ) from None


def next_fire_times(
    expr: str, start: datetime, count: int, timezone: str | None = None
) -> list[datetime]:
    """Return the next ``count`` firings of ``expr`` from ``start`` on, without waiting.

    A clock that is given instead of read, so a schedule can be checked for any date
    (daylight-saving changes included) in no time.

    Args:
        expr: Cron expression, as for :func:`parse_cron`.
        start: The first instant considered (inclusive); a naive one is read in ``timezone``.
        count: How many firings to return.
        timezone: IANA time zone the expression is read in (default: the machine's).

    Returns:
        Aware datetimes in the expression's time zone, in order; fewer than ``count`` if the
        expression stops firing.

    """
    trigger = parse_cron(expr, timezone)
    now = start if start.tzinfo is not None else start.replace(tzinfo=trigger.timezone)
    times: list[datetime] = []
    previous: datetime | None = None
    for _ in range(count):
        fire: datetime | None = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        times.append(fire)
        previous = now = fire
    return times


def _zone(timezone: str | None) -> tzinfo | None:
    if not timezone:
        return None  # APScheduler reads the machine's zone
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{timezone!r} is not a known time zone",
            key="--timezone",
            fix='give an IANA name such as "UTC" or "Europe/Berlin"',
        ) from None


def _weekday(token: str) -> int:
    name = token.lower()
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    if name.isdigit() and int(name) <= 7:
        return int(name)
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun-sat)")


def _cron_weekdays(field: str) -> str:
    """Return a cron day-of-week field as APScheduler weekday names (cron: 0 and 7 = Sunday)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        span, slash, step_text = item.partition("/")
        if slash and not step_text.isdigit():
            raise ValueError(f"step {step_text!r} in {item!r} is not a positive number")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError(f"step {step} in {item!r} is not a positive number")
        if span in ("*", "?"):
            low, high = 0, 6
        elif "-" in span:
            first, last = span.split("-", 1)
            low, high = _weekday(first), _weekday(last)
        else:
            low = _weekday(span)
            high = max(low, 6) if slash else low  # "1/2" is "1-6/2" to cron
        if low > high:
            raise ValueError(f"range {span!r} runs backwards")
        days.update(day % 7 for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days))
