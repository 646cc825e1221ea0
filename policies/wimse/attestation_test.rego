package wimse.attestation_test

import rego.v1

import data.wimse.attestation
import data.wimse.fixtures as f

route := {"attestation": {"affirming_claims": ["hardware"]}}

failures_for(rule, evidence) := found if {
	found := attestation.failures with data.mesh as f.mesh(rule)
		with input as f.request("shop", "POST", ["api", "payments", "refunds"], {"attestation": evidence})
}

failures(evidence) := failures_for(route, evidence)

not_affirming := "attestation is not affirming"

no_hardware := "attestation lacks affirming hardware claim"

not_the_caller := "attestation does not cover the immediate caller"

test_affirming_with_affirming_hardware_passes if {
	every tier in [2, 3, 31] {
		failures(f.attestation("affirming", {"hardware": tier, "executables": 2})) == set()
	}
}

test_warning_status_fails if {
	failures(f.attestation("warning", {"hardware": 2})) == {not_affirming}
}

test_none_status_fails if {
	failures(f.attestation("none", {"hardware": 2})) == {not_affirming}
}

test_contraindicated_status_fails if {
	failures(f.attestation("contraindicated", {"hardware": 2})) == {not_affirming}
}

test_missing_attestation_fails if {
	failures(null) == {not_affirming, no_hardware, not_the_caller}
}

test_affirming_status_without_results_fails if {
	failures({"status": "affirming", "results": []}) == {not_affirming, no_hardware, not_the_caller}
	failures({"status": "affirming"}) == {not_affirming, no_hardware, not_the_caller}
}

test_hardware_claim_missing_fails if {
	failures(f.attestation("affirming", {"executables": 2, "configuration": 2})) == {no_hardware}
}

# Tiers outside 2..31: none (0, 1, -1), warning (32..95), contraindicated (96..127),
# other negatives; and values that are not numbers at all.
test_hardware_outside_the_affirming_tier_fails if {
	every tier in [0, 1, -1, -2, 32, 95, 96, 127, "2", null] {
		failures(f.attestation("affirming", {"hardware": tier})) == {no_hardware}
	}
}

test_every_result_needs_the_claim if {
	good := f.result({"hardware": 2})
	weak := f.result({"hardware": 32})
	failures({"status": "affirming", "results": [good, good]}) == set()
	failures({"status": "affirming", "results": [good, weak]}) == {no_hardware}
}

test_one_affirming_submod_per_result_is_enough if {
	two_submods := object.union(f.result({}), {"submods": {
		"os": {"status": "affirming", "trustworthiness": {"hardware": 40}, "policy_ids": []},
		"tee": {"status": "affirming", "trustworthiness": {"hardware": 2}, "policy_ids": []},
	}})
	failures({"status": "affirming", "results": [two_submods]}) == set()
}

test_malformed_submods_fail if {
	failures({"status": "affirming", "results": [object.union(f.result({}), {"submods": null})]}) == {no_hardware}
	failures({"status": "affirming", "results": [{"status": "affirming"}]}) == {no_hardware, not_the_caller}
}

test_empty_section_requires_only_affirming_status if {
	failures_for({"attestation": {}}, f.attestation("affirming", {})) == set()
	failures_for({"attestation": {}}, f.attestation("warning", {"hardware": 2})) == {not_affirming}
}

test_nothing_required_without_an_attestation_section if {
	failures_for({"txn": {}}, f.attestation("contraindicated", {"hardware": 100})) == set()
}

test_a_transaction_origin_result_alone_does_not_attest_the_caller if {
	origin_only := object.union(
		f.attestation("affirming", {"hardware": 2}),
		{"results": [object.union(f.result({"hardware": 2}), {"source": "txn"})]},
	)
	failures(origin_only) == {not_the_caller}
}

test_a_wit_result_attests_the_caller if {
	from_wit := object.union(
		f.attestation("affirming", {"hardware": 2}),
		{"results": [object.union(f.result({"hardware": 2}), {"source": "wit"})]},
	)
	failures(from_wit) == set()
}
