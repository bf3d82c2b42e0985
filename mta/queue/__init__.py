"""queue package of mta."""
