"""
SMTP replies, named after their codes (RFC 5321, enhanced codes RFC 3463).
"""

from __future__ import annotations

from mta.errors import Reply

S221_BYE = Reply(221, "2.0.0 Bye")
S235_AUTH_OK = Reply(235, "2.7.0 Authentication successful")
S250_OK = Reply(250, "2.0.0 Ok")
S250_SENDER_OK = Reply(250, "2.1.0 Ok")
S250_RCPT_OK = Reply(250, "2.1.5 Ok")
S252_VRFY = Reply(252, "2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
S214_HELP = Reply(214, "2.0.0 See RFC 5321")
S220_TLS_GO = Reply(220, "2.0.0 Ready to start TLS")
S354_DATA = Reply(354, "End data with <CR><LF>.<CR><LF>")

S421_TIMEOUT = "4.4.2 {host} Error: timeout exceeded"
S421_TOO_MANY_ERRORS = "4.7.0 {host} Error: too many errors"
S421_TOO_MANY_COMMANDS = "4.7.0 {host} Error: too many commands"
S421_AUTH_FAILURES = "4.7.0 {host} Error: too many failed logins"
S451_INTERNAL = Reply(451, "4.3.0 Error: internal error, please try again later")
S451_QUEUE = Reply(451, "4.3.0 Error: queue file write error")
S452_TOO_MANY_RCPTS = Reply(452, "4.5.3 Error: too many recipients")
S454_TLS_UNAVAILABLE = Reply(454, "4.7.0 TLS not available")
S454_AUTH_BLOCKED = Reply(454, "4.7.0 Too many failed logins from your address, try later")

S500_UNKNOWN = Reply(500, "5.5.2 Error: command not recognized")
S500_LINE_TOO_LONG = Reply(500, "5.5.2 Error: line too long")
S501_SYNTAX = Reply(501, "5.5.4 Syntax error in parameters or arguments")
S501_HELO = Reply(501, "5.5.4 Syntax: EHLO hostname")
S501_HELO_SYNTAX = Reply(501, "5.5.4 Syntax: HELO hostname")
S501_BDAT_SYNTAX = Reply(501, "5.5.4 Syntax: BDAT size [LAST]")
S501_SENDER_SYNTAX = Reply(501, "5.1.7 Bad sender address syntax")
S501_RCPT_SYNTAX = Reply(501, "5.1.3 Bad recipient address syntax")
S501_AUTH_CANCELLED = Reply(501, "5.7.0 Authentication cancelled")
S501_AUTH_SYNTAX = Reply(501, "5.5.2 Cannot decode response")
S502_EXPN = Reply(502, "5.5.1 EXPN not available")
S503_HELO_FIRST = Reply(503, "5.5.1 Error: send HELO/EHLO first")
S503_NESTED_MAIL = Reply(503, "5.5.1 Error: nested MAIL command")
S503_MAIL_FIRST = Reply(503, "5.5.1 Error: need MAIL command")
S503_DATA_AFTER_BDAT = Reply(503, "5.5.1 Error: DATA after BDAT in one transaction")
S503_ALREADY_AUTH = Reply(503, "5.5.1 Error: already authenticated")
S503_AUTH_IN_MAIL = Reply(503, "5.5.1 Error: MAIL transaction in progress")
S503_TLS_ACTIVE = Reply(503, "5.5.1 Error: TLS already active")
S504_MECHANISM = Reply(504, "5.5.4 Unrecognized authentication type")
S530_TLS_FIRST = Reply(530, "5.7.0 Must issue a STARTTLS command first")
S530_AUTH_FIRST = Reply(530, "5.7.0 Authentication required")
S530_REQUIRETLS = Reply(530, "5.7.10 REQUIRETLS needs a TLS session")
S535_AUTH_FAILED = Reply(535, "5.7.8 Error: authentication failed")
S550_NO_USER = Reply(550, "5.1.1 Recipient address rejected: User unknown in local recipient table")
S552_TOO_BIG = Reply(552, "5.3.4 Error: message file too big")
S553_NEEDS_SMTPUTF8 = Reply(553, "5.6.7 Non-ASCII address needs the SMTPUTF8 parameter")
S554_NO_RECIPIENTS = Reply(554, "5.5.1 Error: no valid recipients")
S554_BARE_NEWLINE = Reply(
    554, "5.6.0 Error: bare <CR> or <LF> in message; lines must end with <CR><LF>"
)
S554_LOOP = Reply(554, "5.4.6 Error: too many hops (mail loop?)")
