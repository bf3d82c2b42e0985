"""delivery package of mta."""
