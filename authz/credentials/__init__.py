"""Credentials: identifiers, JOSE parsing and signatures, and one verifier per credential
(WIT, WPT, HTTP signature, Txn-Token, user token, attestation result, X.509-SVID), the
authenticator that orders them and the context stage. Trust anchors live in `authz.trust`,
replay stores in `authz.replay`."""
