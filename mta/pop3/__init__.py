"""pop3 package of mta."""
