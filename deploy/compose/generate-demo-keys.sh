#!/bin/sh
# Generates the demo trust domain into DIR (default .demo): the layout `make run` creates, so
# either one can be used with the Compose example.
#   DIR/keys/   private JWKs (mode 0600): the WIT issuer, the Transaction Token Service, the
#               user token issuer, the attestation verifier, and one key per demo workload.
#               Only whoever mints tokens needs them; the gateway never mounts this folder.
#   DIR/trust/  the signers' public keys as JWKS: what the gateway mounts, read-only, at
#               /etc/wimse-authz/trust.
# A key that exists is kept. Dev keys only: never use them for anything real.
#
# Needs `wimse-authz` on PATH: the checkout's .venv/bin, or the image itself
# (deploy/compose/README.md: `docker compose run --rm keys`).
set -eu

dir=${1:-.demo}
mkdir -p "$dir/keys" "$dir/trust"
chmod 0700 "$dir/keys"

# signer NAME JWKS: a signing key whose public half the gateway trusts, in trust/JWKS.jwks.json.
signer() {
    if [ -e "$dir/keys/$1.jwk.json" ]; then
        echo "kept $dir/keys/$1.jwk.json"
        return
    fi
    # A new key replaces the old one in the JWKS too: nothing else stays trusted.
    rm -f "$dir/trust/$2.jwks.json"
    wimse-authz keys generate --alg ES256 --out "$dir/keys/$1.jwk.json" \
        --jwks "$dir/trust/$2.jwks.json"
    chmod 0644 "$dir/trust/$2.jwks.json"
}

# workload NAME ALG: a workload's own key (its WIT confirms it; the gateway never needs it).
workload() {
    if [ -e "$dir/keys/$1.jwk.json" ]; then
        echo "kept $dir/keys/$1.jwk.json"
        return
    fi
    wimse-authz keys generate --alg "$2" --out "$dir/keys/$1.jwk.json"
}

signer issuer demo.example
signer tts demo.example.tts
signer idp idp
signer verifier demo-verifier

workload frontend EdDSA
workload ops ES256
workload batch Ed25519
workload orders ES256
workload payments EdDSA
