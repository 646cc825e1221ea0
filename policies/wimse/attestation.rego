# Attestation rules for sensitive routes (input.wimse.attestation, AR4SI results).
#
# A route's `attestation` section (an object, possibly empty) requires the overall status
# to be exactly "affirming": "warning" and "none" are not good enough, so the rule says
# what it wants rather than excluding "contraindicated". It may also hold:
#   affirming_claims - trustworthiness claims (e.g. "hardware") that EVERY result must
#                      affirm: at least one submod per result with that claim in 2..31
# A result from the Txn-Token's rctx (source "txn") describes the workload that started the
# transaction, not the immediate caller: the caller's own platform must be attested too, by
# a result from its WIT or a bound attestation header.
package wimse.attestation

import rego.v1

import data.wimse.routes.applying

failures contains "attestation is not affirming" if {
	some rule in applying
	is_object(rule.attestation)
	not affirming
}

failures contains "attestation does not cover the immediate caller" if {
	some rule in applying
	is_object(rule.attestation)
	not caller_attested
}

caller_attested if {
	some result in input.wimse.attestation.results
	result.source in {"header", "wit"}
}

# Needs at least one result: an empty list affirms nothing.
affirming if {
	input.wimse.attestation.status == "affirming"
	results := input.wimse.attestation.results
	is_array(results)
	count(results) > 0
}

failures contains sprintf("attestation lacks affirming %v claim", [claim]) if {
	some rule in applying
	some claim in rule.attestation.affirming_claims
	not every_result_affirms(claim)
}

every_result_affirms(claim) if {
	results := input.wimse.attestation.results
	is_array(results)
	count(results) > 0
	every result in results {
		result_affirms(result, claim)
	}
}

result_affirms(result, claim) if {
	submods := result.submods
	is_object(submods)
	some submod in submods
	affirming_tier(submod.trustworthiness[claim])
}

# AR4SI tiers: 2..31 affirming; 0, 1 and -1 none; 32..95 warning; 96..127 contraindicated;
# other negative values are not affirming either.
affirming_tier(value) if {
	is_number(value)
	value >= 2
	value <= 31
}
