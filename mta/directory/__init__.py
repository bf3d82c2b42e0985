"""directory package of mta."""
