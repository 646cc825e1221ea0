package wimse.routes_test

import rego.v1

import data.wimse.fixtures as f
import data.wimse.routes

payments_rule := {"methods": ["POST"], "path_prefixes": [["api", "payments"]], "txn": {"required": true}}

# Tests bind the result of a `with` evaluation before asserting on it: regorus mis-evaluates
# `<package rule> in <ref> with ...` written as one expression.
applies(rule, method, segments) if {
	applying := routes.applying with data.mesh as f.mesh(rule)
		with input as f.request("shop", method, segments, {})
	rule in applying
}

test_rule_applies_to_its_method_and_prefix if {
	applies(payments_rule, "POST", ["api", "payments"])
}

test_rule_applies_below_its_prefix if {
	applies(payments_rule, "POST", ["api", "payments", "refunds"])
}

test_rule_ignores_other_methods if {
	not applies(payments_rule, "GET", ["api", "payments"])
}

test_prefix_is_compared_by_segment_not_text if {
	not applies(payments_rule, "POST", ["api", "payments-admin"])
}

test_rule_ignores_shorter_paths if {
	not applies(payments_rule, "POST", ["api"])
}

test_rule_without_methods_or_paths_applies_everywhere if {
	applies({"txn": {"required": true}}, "DELETE", ["anything"])
}

# A request the gateway could not describe gets the requirements, not a pass.
test_missing_method_and_path_still_apply_the_rule if {
	inp := json.remove(f.request("shop", "POST", ["api", "payments"], {}), ["attributes", "parsed_path"])
	applying := routes.applying with data.mesh as f.mesh(payments_rule) with input as inp
	payments_rule in applying
}

test_other_services_rules_do_not_apply if {
	count(routes.applying) == 0 with data.mesh as f.mesh(payments_rule)
		with input as f.request("echo", "POST", ["api", "payments"], {})
}

test_has_prefix_guards_non_arrays if {
	not routes.has_prefix(null, ["api"])
	not routes.has_prefix(["api"], "api")
	routes.has_prefix(["api", "x"], [])
}

test_labels_fall_back_when_input_is_missing if {
	routes.service_label == "the service" with input as {}
	routes.method_label == "this method" with input as {}
	routes.service_label == "shop" with input as f.request("shop", "GET", [], {})
}

# --- the path itself -------------------------------------------------------------------

not_canonical(segments) if {
	failures := routes.failures with input as f.request("shop", "POST", segments, {})
	"request path is not canonical" in failures
}

test_empty_segment_inside_the_path_is_not_canonical if {
	not_canonical(["api", "payments", "", "refunds"])
	not_canonical(["", "admin"])
}

test_segment_with_a_path_parameter_is_not_canonical if {
	not_canonical(["api", "payments", "refunds;x"])
	not_canonical(["api;x", "payments"])
}

test_dot_segments_are_not_canonical if {
	not_canonical(["api", "..", "admin"])
	not_canonical([".", "api"])
}

test_segment_hiding_a_separator_is_not_canonical if {
	not_canonical(["api", "a/b"])
	not_canonical(["api", "a\\b"])
}

test_non_string_segment_is_not_canonical if {
	inp := object.union(f.request("shop", "POST", [], {}), {"parsed_path": ["api", 7]})
	failures := routes.failures with input as inp
	"request path is not canonical" in failures
}

test_root_trailing_slash_and_dotted_names_are_canonical if {
	count(routes.failures) == 0 with input as f.request("shop", "GET", [""], {})
	count(routes.failures) == 0 with input as f.request("shop", "GET", ["api", ""], {})
	count(routes.failures) == 0 with input as f.request("shop", "GET", [".well-known", "...", "a.b"], {})
}

test_path_check_guards_a_non_array_path if {
	count(routes.failures) == 0 with input as object.union(f.request("shop", "GET", [], {}), {"parsed_path": "api"})
}

frontend_rule := {"methods": ["GET"], "callers": [f.frontend], "txn": {"scope": "orders.read"}}

applies_to(rule, caller) if {
	applying := routes.applying with data.mesh as f.mesh(rule)
		with input as f.request("shop", "GET", ["api", "orders"], {"caller": caller})
	rule in applying
}

test_a_rule_naming_callers_applies_to_them if {
	applies_to(frontend_rule, f.caller(f.frontend))
}

test_a_rule_naming_callers_leaves_other_callers_alone if {
	not applies_to(frontend_rule, f.caller(f.ops))
}

test_a_rule_naming_callers_still_applies_to_an_unauthenticated_request if {
	applies_to(frontend_rule, null)
}
