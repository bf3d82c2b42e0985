"""policy package of mta."""
