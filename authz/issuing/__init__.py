"""What the gateway signs: proofs for the workload it speaks for (outbound), and the tokens a
local issuer mints. Nothing here verifies; `authz.credentials` does that."""
