"""IMAP4rev1 (RFC 3501) and its extensions: parsing, response encoding and serving."""
