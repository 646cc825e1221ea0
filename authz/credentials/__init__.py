"""Credentials: identifiers, trust anchors, WIT, WPT, replay protection, mTLS callers."""
