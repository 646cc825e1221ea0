"""gRPC serving: the ext_authz adapter, health, reflection and listeners."""
