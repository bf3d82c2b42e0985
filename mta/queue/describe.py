# -*- test-case-name: tests.test_control -*-
"""
What C{mta queue list} and C{mta queue show} print: pure functions, no I/O.

L{describeMessage} turns a queued L{Envelope} into a JSON-able dict: the
envelope's own on-disk form (L{Envelope.toJSON}, so scripts see the same
names as the queue file) plus what a reader wants computed: the size, the
age, whether it is held, when it expires, and when and why the next
attempt happens.  The running server makes these dicts (it knows the retry
schedule it follows and which message is being delivered right now) and
sends them over the control socket; with no server running, the admin
command makes them from the spool files.  Either way L{renderList} and
L{renderShow} turn them into text, and C{--json} prints them as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from mta.envelope import Envelope

#: The key in an envelope's C{extra} that says the administrator holds
#: it (C{mta queue hold}): no attempt until C{mta queue release}.
HELD = "held"


def isHeld(envelope: Envelope) -> bool:
    """
    @return: whether the administrator holds C{envelope}.
    """
    return envelope.extra.get(HELD) is True


def formatDuration(seconds: float) -> str:
    """
    @return: C{seconds} in the largest whole unit that fits, as the config
        writes durations: C{90} is C{1m}, C{7200} is C{2h}.
    """
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def formatSize(size: int) -> str:
    """
    @return: C{size} bytes, shortened: C{512}, C{1.2K}, C{3.4M}.
    """
    if size < 1024:
        return str(size)
    if size < 1024 * 1024:
        return f"{size / 1024:.1f}K"
    return f"{size / (1024 * 1024):.1f}M"


def formatTime(when: float, now: float) -> str:
    """
    @return: local time of day when C{when} is within a day of C{now},
        else the date too.
    """
    pattern = "%H:%M:%S" if abs(when - now) < 86400 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(pattern, time.localtime(when))


def nextAttempt(
    envelope: Envelope,
    schedule: Sequence[float],
    maxLifetime: float,
    busy: bool = False,
) -> tuple[float | None, str]:
    """
    When and why the next delivery attempt of C{envelope} happens.

    @param schedule: the retry schedule the queue follows (the last
        interval repeating).
    @param busy: an attempt is running right now.
    @return: the time (C{None} when no attempt is scheduled) and why.
    """
    pending = envelope.pending
    if not pending:
        return None, "nothing left to deliver"
    if busy:
        return None, "being delivered right now"
    if isHeld(envelope):
        return None, "held by the administrator (mta queue release ID)"
    attempts = max(r.attempts for r in pending)
    # A message not yet tried has no next attempt on record: it is due
    # since it arrived.
    when = max(envelope.nextAttempt, envelope.arrival)
    if attempts == 0:
        reason = "first attempt"
    else:
        interval = schedule[min(attempts, len(schedule)) - 1] if schedule else 0.0
        reason = f"retry {attempts} of the schedule ({formatDuration(interval)})"
    if when >= envelope.arrival + maxLifetime:
        reason += "; the message expires before then: a failure then bounces it"
    return when, reason


def describeMessage(
    envelope: Envelope,
    size: int,
    now: float,
    schedule: Sequence[float],
    maxLifetime: float,
    busy: bool = False,
) -> dict[str, Any]:
    """
    Describe one queued message for C{mta queue list} and C{show}.

    @param size: the message's size in bytes.
    @param now: the current POSIX time.
    @return: L{Envelope.toJSON}'s dict (each recipient with its C{history})
        plus C{size}, C{age} (seconds), C{held}, C{busy}, C{expires} (POSIX
        time), C{next_time} (POSIX time or C{None}) and C{next_reason}.
    """
    when, reason = nextAttempt(envelope, schedule, maxLifetime, busy)
    return {
        **envelope.toJSON(),
        "size": size,
        "age": max(0.0, now - envelope.arrival),
        "held": isHeld(envelope),
        "busy": busy,
        "expires": envelope.arrival + maxLifetime,
        "next_time": when,
        "next_reason": reason,
    }


def renderList(messages: Sequence[dict[str, Any]], now: float) -> list[str]:
    """
    One line per message: id, age, size, sender, then each recipient with
    its state, last error, attempts and next attempt (or C{held}).

    @param messages: L{describeMessage} dicts.
    """
    lines = []
    for m in sorted(messages, key=lambda m: float(m["arrival"])):
        when = m["next_time"]
        if m["held"]:
            later = "held"
        elif m["busy"]:
            later = "being delivered"
        else:
            later = f"next {formatTime(when, now)}" if when is not None else ""
        rcpts = " ".join(_recipientSummary(r, later) for r in m["recipients"])
        held = " HELD" if m["held"] else ""
        lines.append(
            f"{m['id']}{held} {formatDuration(m['age'])} {formatSize(m['size'])} "
            f"<{m['sender']}> {rcpts}"
        )
    return lines


def _recipientSummary(r: dict[str, Any], later: str) -> str:
    """
    @return: C{<address>(state: last error; N attempts, next ...)}.
    """
    error = f": {r['last_error']}" if r["last_error"] else ""
    notes = [f"{r['attempts']} attempt{'' if r['attempts'] == 1 else 's'}"]
    if r["state"] == "pending" and later:
        notes.append(later)
    return f"<{r['address']}>({r['state']}{error}; {', '.join(notes)})"


def renderShow(m: dict[str, Any], now: float) -> list[str]:
    """
    The envelope, then per recipient the timeline of its attempts and
    what happens next, then the message's headers.

    @param m: a L{describeMessage} dict with a C{headers} key (text).
    """
    lines = [f"message {m['id']}" + ("  (HELD)" if m["held"] else "")]
    lines += _envelopeLines(m, now)
    for r in m["recipients"]:
        lines.append("")
        lines += _timeline(r, m, now)
    lines.append("")
    lines.append("headers:")
    lines += ["  " + h for h in m.get("headers", "").splitlines()]
    return lines


def _envelopeLines(m: dict[str, Any], now: float) -> list[str]:
    """
    @return: the lines on sender, arrival, client and the MAIL parameters.
    """
    client = m["client_address"] or "local"
    if m["helo"]:
        client += f" (HELO {m['helo']})"
    if m["auth_user"]:
        client += f", authenticated as {m['auth_user']}"
    lines = [
        f"  sender:   <{m['sender']}>",
        f"  arrived:  {formatTime(m['arrival'], now)} ({formatDuration(m['age'])} ago), "
        f"{m['size']} bytes",
        f"  client:   {client}",
    ]
    params = []
    if m.get("dsn_ret"):
        params.append(f"RET={m['dsn_ret']}")
    if m.get("dsn_envid"):
        params.append(f"ENVID={m['dsn_envid']}")
    if m.get("body_type"):
        params.append(f"BODY={m['body_type']}")
    if m.get("smtputf8"):
        params.append("SMTPUTF8")
    if m.get("require_tls"):
        params.append("REQUIRETLS")
    if params:
        lines.append(f"  mail:     {' '.join(params)}")
    lines.append(f"  expires:  {formatTime(m['expires'], now)} (undelivered recipients bounce)")
    return lines


def _timeline(r: dict[str, Any], m: dict[str, Any], now: float) -> list[str]:
    """
    @return: one recipient's heading, each attempt of its history (time,
        reply, remote server, and the detail one note a line), then when
        and why the next try happens.
    """
    heading = f"recipient <{r['address']}>"
    if r["original"] != r["address"]:
        heading += f" (RCPT TO <{r['original']}>)"
    if r.get("notify"):
        heading += f" NOTIFY={','.join(r['notify'])}"
    if r.get("orcpt"):
        heading += f" ORCPT={r['orcpt']}"
    count = r["attempts"]
    lines = [f"{heading}: {r['state']} after {count} attempt{'' if count == 1 else 's'}"]
    history = r.get("history", [])
    if count > len(history):
        lines.append(f"  ({count - len(history)} earlier attempt(s) not kept)")
    for a in history:
        lines.append(f"  {formatTime(a['time'], now)}  {a['reply']}")
        if a.get("remote"):
            lines.append(f"            server: {a['remote']}")
        for note in filter(None, a.get("detail", "").split("; ")):
            lines.append(f"            {note}")
    if r["state"] == "pending":
        when = m["next_time"]
        at = f"{formatTime(when, now)}, " if when is not None else ""
        lines.append(f"  next attempt: {at}{m['next_reason']}")
    return lines
