package wimse.user_test

import rego.v1

import data.wimse.fixtures as f
import data.wimse.user

route := {"user": {"any_role": ["customer", "support"]}}

failures_for(rule, user_doc) := found if {
	found := user.failures with data.mesh as f.mesh(rule)
		with input as f.request("shop", "POST", ["api", "orders"], {"user": user_doc})
}

failures(user_doc) := failures_for(route, user_doc)

no_token := "shop requires a verified user token"

no_role := "user lacks any of roles [\"customer\", \"support\"]"

test_any_listed_role_passes if {
	failures(f.user(["customer"])) == set()
	failures(f.user(["auditor", "support"])) == set()
}

test_other_roles_fail if {
	failures(f.user(["auditor"])) == {no_role}
}

test_no_roles_fail if {
	failures(f.user([])) == {no_role}
}

test_role_name_must_match_exactly if {
	failures(f.user(["customers", "Customer"])) == {no_role}
}

test_roles_as_a_string_fail if {
	failures(f.user("customer")) == {no_role}
}

test_missing_user_fails if {
	failures(null) == {no_token, no_role}
}

# The Txn-Token's user claims alone are not a verified user token.
test_user_without_token_fails if {
	failures(object.union(f.user(["customer"]), {"token": null})) == {no_token, no_role}
}

test_token_scope_requirement if {
	scoped := {"user": {"scope": "orders.write"}}
	failures_for(scoped, f.user([])) == set()
	failures_for(scoped, object.union(f.user([]), {"token": {"scope": ["orders.read"]}})) == {"user token scope lacks orders.write"}
	failures_for(scoped, null) == {no_token, "user token scope lacks orders.write"}
}

test_nothing_required_without_a_user_section if {
	failures_for({"txn": {}}, null) == set()
}
