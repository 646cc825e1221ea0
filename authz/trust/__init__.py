"""Trust anchors: the keys and certificate authorities each signer is trusted with.

`key_sets` holds configured keys and the per-trust-domain store verifiers read,
`spiffe_bundle` parses SPIFFE trust bundles, and `live` keeps key sets fetched from a URL
current. Verifiers (`authz.credentials`) only read these; nothing here verifies a token.
"""
