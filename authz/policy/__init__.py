"""Policy: the input document, engines, decisions, loading and Rego tests."""
