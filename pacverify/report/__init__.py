"""Rendering a certificate: :mod:`.document` says what the report contains and in which order (verdict, statements,
figures, failing points, evidence, settings, files, timings, environment), from :mod:`.tables`, :mod:`.failing` and
:mod:`.plots`, as the format-neutral pieces of :mod:`.blocks`; :mod:`.render` writes them as Markdown or HTML."""
