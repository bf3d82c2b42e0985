"""
mta's tests (trial).

Property tests (hypothesis) run derandomized: the same examples on every
run and every machine, so a CI run cannot fail by chance on an example
nobody can reproduce; a property that should be explored further gets its
own, larger, C{max_examples} where it is written.
"""

from hypothesis import settings

settings.register_profile("mta", derandomize=True, deadline=None)
settings.load_profile("mta")
