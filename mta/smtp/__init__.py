"""smtp package of mta."""
