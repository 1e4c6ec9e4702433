"""Serving: the BentoML scoring service, value tiers and retention alerts (issue 5)."""
