# Builders for test inputs shaped like the gateway's (docs/policy-input.md). Loaded only by
# `policy test` (a *_test.rego file), shared by every test package.
package wimse.fixtures

import rego.v1

id(name) := sprintf("spiffe://demo.example/%s", [name])

frontend := id("frontend")

orders := id("orders")

ops := id("ops")

reseller := "spiffe://partner.example/reseller"

api_gateway := "apigateway.demo.example"

domain_of(workload_id) := split(workload_id, "/")[2]

# The immediate caller, as authenticated by the gateway.
caller(workload_id) := {
	"id": workload_id,
	"trust_domain": domain_of(workload_id),
	"path": concat("/", array.concat([""], array.slice(split(workload_id, "/"), 3, 100))),
	"scheme": "spiffe",
	"authenticated_by": "wpt",
}

# request(service, method, segments, wimse): `wimse` overrides members of input.wimse.
request(service, method, segments, wimse) := {
	"attributes": {"request": {"http": {
		"method": method,
		"path": concat("/", array.concat([""], segments)),
		"headers": {},
	}}},
	"parsed_path": segments,
	"parsed_query": {},
	"parsed_body": null,
	"truncated_body": false,
	"version": {"ext_authz": "v3", "encoding": "protojson"},
	"wimse": object.union(
		{
			"direction": "inbound",
			"caller": null,
			"service": {"name": service, "id": id(service), "trust_domain": "demo.example"},
			"txn": null,
			"chain": [],
			"user": null,
			"attestation": null,
		},
		wimse,
	),
}

# outbound(workload, callee, method, segments): the app of `workload` calling `callee`
# through its egress Envoy.
outbound(workload_id, callee, method, segments) := {
	"attributes": {"request": {"http": {
		"method": method,
		"path": concat("/", array.concat([""], segments)),
		"headers": {},
	}}},
	"parsed_path": segments,
	"parsed_query": {},
	"parsed_body": null,
	"truncated_body": false,
	"version": {"ext_authz": "v3", "encoding": "protojson"},
	"wimse": {
		"direction": "outbound",
		"workload": {
			"id": workload_id,
			"trust_domain": domain_of(workload_id),
			"path": concat("/", array.concat([""], array.slice(split(workload_id, "/"), 3, 100))),
			"scheme": "spiffe",
		},
		"callee": {
			"name": callee,
			"origin": sprintf("https://%s.demo.example", [callee]),
			"path": concat("/", array.concat([""], segments)),
			"parsed_path": segments,
			"audience": sprintf("https://%s.demo.example/%s", [callee, concat("/", segments)]),
			"proof": "wpt",
		},
		"caller": null,
		"service": null,
		"txn": null,
		"chain": [],
		"user": null,
		"attestation": null,
	},
}

# A verified Txn-Token requested by `req_wl` for a checkout of 250.
txn(req_wl) := {
	"id": "txn-1",
	"sub": "user-1",
	"scope": ["checkout"],
	"tctx": {"amount": 250},
	"rctx": null,
	"req_wl": req_wl,
	"aud": ["demo.example"],
	"iss": null,
	"issued_at": 1700000000,
	"expires_at": 1700000060,
	"act": null,
	"kid": "tts-1",
	"alg": "ES256",
	"legacy": false,
	"bound_by": "wpt",
	"claims": {},
}

hop(workload_id, source) := hop_in(workload_id, domain_of(workload_id), source)

# A hop whose id is not a workload URI (a host name) takes the Txn-Token's trust domain.

hop_in(workload_id, trust_domain, source) := {
	"id": workload_id,
	"trust_domain": trust_domain,
	"source": source,
	"verified": source in {"caller.wit", "caller.mtls"},
	"authenticated_by": object.get(_hop_proofs, source, null),
}

# How the gateway proves the caller hop (a WIT caller may also use an HTTP signature).
_hop_proofs := {"caller.wit": "wpt", "caller.mtls": "mtls"}

# user(roles): the Txn-Token's user plus a verified access token holding `roles`.
user(roles) := {
	"sub": "user-1",
	"scope": ["checkout"],
	"tctx": null,
	"token": {
		"type": "access_token",
		"header": "x-user-token",
		"iss": "https://idp.demo.example",
		"sub": "user-1",
		"aud": ["orders"],
		"client_id": "shop",
		"scope": ["orders.write"],
		"roles": roles,
		"groups": [],
		"entitlements": [],
		"issued_at": 1700000000,
		"expires_at": 1700000600,
		"claims": {},
	},
}

# attestation(status, trustworthiness): one result with one submod.
attestation(status, trustworthiness) := {"status": status, "results": [result(trustworthiness)]}

result(trustworthiness) := {
	"source": "header",
	"status": "affirming",
	"fresh": true,
	"profile": "tag:ietf.org,2026:rats/ear#03",
	"issued_at": 1700000000,
	"expires_at": 1700000300,
	"verifier": {"build": "v1", "developer": "https://verifier.demo.example"},
	"signed_by": "https://verifier.demo.example",
	"submods": {"platform": {
		"status": "affirming",
		"trustworthiness": trustworthiness,
		"policy_ids": ["p1"],
	}},
}

# A mesh of one service, "shop", with a single route rule: for testing one package at a time.
mesh(route) := {
	"public_paths": [["healthz"]],
	"trusted_domains": ["demo.example"],
	"services": {"shop": {"callers": [], "routes": [route]}},
}
