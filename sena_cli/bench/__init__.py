"""Evaluators, one per benchmark family, all returning plain metric dicts."""
