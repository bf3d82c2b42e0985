"""store package of mta."""
