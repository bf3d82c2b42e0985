"""testing package of mta."""
