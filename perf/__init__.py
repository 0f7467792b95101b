"""Benchmarks and the flood harness. Each prints or writes figures against a baseline measured in
the same run; none is part of the product, and nothing under ``controller/``, ``gateway/`` or
``taskctl/`` imports from here."""
