package wimse.txn_test

import rego.v1

import data.wimse.fixtures as f
import data.wimse.txn

route := {"txn": {"required": true, "scope": "checkout", "tctx_max": {"amount": 1000}}}

failures_for(rule, token) := found if {
	found := txn.failures with data.mesh as f.mesh(rule)
		with input as f.request("shop", "POST", ["api", "payments"], {"txn": token})
}

failures(token) := failures_for(route, token)

# f.txn carries scope ["checkout"] and tctx {"amount": 250}.
with_tctx(tctx) := object.union(object.remove(f.txn(f.frontend), ["tctx"]), {"tctx": tctx})

test_checkout_within_ceiling_passes if {
	failures(f.txn(f.frontend)) == set()
}

test_amount_at_ceiling_passes if {
	failures(with_tctx({"amount": 1000})) == set()
}

test_missing_txn_fails_every_requirement if {
	failures(null) == {
		"shop requires a transaction token",
		"transaction scope lacks checkout",
		"transaction context amount is missing or not a number",
	}
}

test_other_scope_fails if {
	failures(object.union(f.txn(f.frontend), {"scope": ["browse"]})) == {"transaction scope lacks checkout"}
}

test_scope_as_a_string_fails if {
	failures(object.union(f.txn(f.frontend), {"scope": "checkout"})) == {"transaction scope lacks checkout"}
}

test_amount_over_ceiling_fails if {
	failures(with_tctx({"amount": 5000})) == {"transaction context amount 5000 exceeds 1000"}
}

test_numeric_string_amount_is_accepted if {
	failures(with_tctx({"amount": "100"})) == set()
	failures(with_tctx({"amount": "999.99"})) == set()
}

test_numeric_string_amount_over_ceiling_fails if {
	failures(with_tctx({"amount": "5000"})) == {"transaction context amount 5000 exceeds 1000"}
}

# None of these may reach to_number: an error there would abort the whole evaluation.
test_non_numeric_amounts_deny_without_error if {
	every amount in ["100 EUR", "1e3", "", " 100", "0x10", "12345678901234567890", true, null, [100], {"value": 100}] {
		failures(with_tctx({"amount": amount})) == {"transaction context amount is missing or not a number"}
	}
}

test_absent_amount_fails if {
	failures(with_tctx({"currency": "EUR"})) == {"transaction context amount is missing or not a number"}
}

test_null_tctx_fails if {
	failures(with_tctx(null)) == {"transaction context amount is missing or not a number"}
}

# Rego orders numbers before strings, so a string ceiling must not let 5000 through.
test_non_numeric_ceiling_denies if {
	failures_for({"txn": {"tctx_max": {"amount": "1000"}}}, with_tctx({"amount": 5000})) == {"transaction context amount 5000 exceeds 1000"}
}

test_nothing_required_without_a_txn_section if {
	failures_for({"chain": {}}, null) == set()
}

test_required_alone_accepts_any_token if {
	failures_for({"txn": {"required": true}}, object.union(f.txn(f.frontend), {"scope": []})) == set()
}

# The longest strings the guard lets through still parse. (A ceiling only bounds from above.)
test_longest_accepted_numeric_string_parses if {
	count(failures(with_tctx({"amount": "-999999999999999.999999999999999"}))) == 0
	count(failures(with_tctx({"amount": "999999999999999.999999999999999"}))) == 1
}
