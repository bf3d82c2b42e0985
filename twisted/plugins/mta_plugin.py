"""
twistd plugin: C{twistd mta [--config PATH]} runs the mail server.
"""

from twisted.application.service import ServiceMaker

mta = ServiceMaker(
    "mta",
    "mta.tap",
    "A complete mail server: SMTP, submission, queue, Maildir and POP3.",
    "mta",
)
