"""Algorithm 1 of 004 as a list of stages (:mod:`.stages`) run by one runner (:mod:`.runner`) that owns caching,
timing and progress; :mod:`.run` composes them into ``certify``."""
