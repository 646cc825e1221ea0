"""Replay stores for single-use proofs (WPT `jti`s, HTTP-signature nonces): one process's
bounded cache (`memory`), a table the workers of one `serve --workers N` share
(`shared_memory`), or one shared by every replica through Redis (`redis_store`)."""
