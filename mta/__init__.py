"""
mta: a complete mail server on Twisted.

Read L{mta.interfaces} first: it names every seam between the parts.  The
message lifecycle runs C{smtp.server} -> C{queue.spool} -> C{queue.scheduler}
-> C{routing} -> C{delivery.local} -> C{store.maildir}, and
C{pop3.server} reads the store back.  C{tap.makeService} wires it all.
"""
