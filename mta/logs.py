# -*- test-case-name: tests.test_logs -*-
"""
The log lines written for every message, login and session, made cheaply.

A Twisted log event carries its text as a PEP 3101 C{log_format} that is
filled in when an observer writes the event, by a formatter written in
Python.  For the lines the server writes per message (the SMTP
transaction, each delivery attempt, the removal from the queue) that
formatting was a measurable share of the reactor thread's time per
message.  L{logLine} fills the template once with C{str.format}, which is
written in C, and emits the finished text (its braces escaped) as the
event's format; the fields stay in the event for observers that want them.
"""

from __future__ import annotations

from twisted.logger import Logger


def logLine(logger: Logger, template: str, **fields: object) -> None:
    """
    Emit an info event whose text is C{template.format(**fields)}.

    @param template: a C{str.format} template naming only C{fields}
        (plain C{{name}} and format specs such as C{{delay:.2f}}; not
        Twisted's C{{name()}} call syntax).
    """
    text = template.format(**fields)
    logger.info(text.replace("{", "{{").replace("}", "}}"), **fields)
