"""Rendering a certificate: Markdown / HTML (:mod:`.render`) and its figures (:mod:`.plots`)."""
