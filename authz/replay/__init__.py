"""Replay stores for single-use proofs (WPT `jti`s, HTTP-signature nonces): one process's
bounded cache (`memory`), or one shared by every replica through Redis (`redis_store`)."""
