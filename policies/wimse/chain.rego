# Call-chain rules: who handed the request on, and where the transaction came from.
#
# A route's `chain` section may hold:
#   via           - the immediate (gateway-authenticated) caller must be one of these ids
#   entry         - the transaction's origin, txn.req_wl, must be one of these
#   actors        - when the Txn-Token names a current actor (txn.act), its sub must be listed
#   trusted_hops  - true: every hop of input.wimse.chain is in data.mesh.trusted_domains
#   extra_domains - more trust domains accepted for hops on this route
# Earlier actors (hops with source "txn.act.prior", nested `act` claims) are never read:
# RFC 8693 says they are informational and must not be used for access control.
package wimse.chain

import rego.v1

import data.wimse.routes.applying
import data.wimse.routes.service_label

failures contains sprintf("%s requires caller in via list", [service_label]) if {
	some rule in applying
	via := rule.chain.via
	not input.wimse.caller.id in via
}

failures contains sprintf("%s requires transaction origin in entry list", [service_label]) if {
	some rule in applying
	entry := rule.chain.entry
	not input.wimse.txn.req_wl in entry
}

# Only applies when a current actor is present: a token nobody has exchanged has none.
failures contains sprintf("%s requires current actor in actors list", [service_label]) if {
	some rule in applying
	actors := rule.chain.actors
	current_actor := input.wimse.txn.act
	current_actor != null
	not current_actor.sub in actors
}

# Without a chain there is nothing to vouch for the hops, so the requirement fails.
failures contains sprintf("%s requires a known call chain", [service_label]) if {
	some rule in applying
	rule.chain.trusted_hops == true
	not is_array(input.wimse.chain)
}

failures contains sprintf("%s requires trusted hops; %s is not", [service_label, describe(hop)]) if {
	some rule in applying
	rule.chain.trusted_hops == true
	some hop in checked_hops
	not trusted(rule, hop)
}

# Every hop except prior actors. The immediate caller is the chain's last hop; it is added
# from input.wimse.caller as well so that an empty or short chain cannot leave it out.
checked_hops contains hop if {
	is_array(input.wimse.chain)
	some hop in input.wimse.chain
	not prior_actor(hop)
}

checked_hops contains input.wimse.caller if is_object(input.wimse.caller)

prior_actor(hop) if hop.source == "txn.act.prior"

trusted(_, hop) if hop.trust_domain in data.mesh.trusted_domains

trusted(rule, hop) if hop.trust_domain in rule.chain.extra_domains

describe(hop) := sprintf("%v (%v)", [object.get(hop, "id", "a hop"), object.get(hop, "trust_domain", "no trust domain")]) if {
	is_object(hop)
} else := "a malformed hop"
