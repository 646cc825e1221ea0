# Issuance: which Txn-Tokens the Transaction Token Service issues, at the edge and by token
# exchange (docs/tts.md). The decision proposes; the gateway enforces whatever it says: the
# scope is never wider than the subject's grant, and txn, sub, aud, iat, exp and req_wl are
# the gateway's own (a decision naming them is refused).
#
# data.mesh.issuance.edge: rules {methods, path_prefixes, scope, action}; the first rule
# that applies to the request names the purpose (scope) of the transaction it starts, and
# tctx records the action and, for a checkout, the amount from the JSON body.
# data.mesh.issuance.exchange[<requester id>]: {subject_kinds}: which subject tokens a
# workload may exchange; the scope is the one it asks for.
package wimse.issuance

import rego.v1

import data.wimse.routes.has_prefix

default decision := {"allowed": false, "reasons": ["no issuance rule applies"]}

issuance := input.wimse.issuance

# --- at the edge --------------------------------------------------------------------------

edge_rules := [rule |
	some rule in data.mesh.issuance.edge
	input.attributes.request.http.method in rule.methods
	some prefix in rule.path_prefixes
	has_prefix(input.parsed_path, prefix)
]

amount := {"amount": input.parsed_body.amount} if is_number(input.parsed_body.amount)

else := {}

decision := {
	"allowed": true,
	"scope": rule.scope,
	"tctx": object.union({"action": rule.action}, amount),
	"rctx": {"authn": issuance.subject.kind},
} if {
	issuance.shape == "edge"
	count(edge_rules) > 0
	rule := edge_rules[0]
}

# --- token exchange -------------------------------------------------------------------------

exchange_allowed if {
	issuance.shape == "token_exchange"
	grant := data.mesh.issuance.exchange[issuance.requester]
	issuance.subject.kind in grant.subject_kinds
}

decision := {"allowed": true, "rctx": {"authn": issuance.subject.kind}} if exchange_allowed

decision := {
	"allowed": false,
	"reasons": [sprintf("%s may not exchange a %s", [issuance.requester, issuance.subject.kind])],
} if {
	issuance.shape == "token_exchange"
	not exchange_allowed
}
