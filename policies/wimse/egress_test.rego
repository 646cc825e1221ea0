package wimse.egress_test

import rego.v1

import data.wimse.egress
import data.wimse.fixtures as f

grants := {f.frontend: [{"callee": "orders", "methods": ["GET"], "path_prefixes": [["api", "orders"]]}]}

test_granted_callee_method_and_path_are_allowed if {
	egress.allowed with input as f.outbound(f.frontend, "orders", "GET", ["api", "orders", "7"])
		with data.mesh.egress as grants
}

test_another_callee_is_refused if {
	not egress.allowed with input as f.outbound(f.frontend, "payments", "GET", ["api", "orders"])
		with data.mesh.egress as grants
}

test_another_method_is_refused if {
	not egress.allowed with input as f.outbound(f.frontend, "orders", "POST", ["api", "orders"])
		with data.mesh.egress as grants
}

test_a_path_outside_the_prefix_is_refused if {
	not egress.allowed with input as f.outbound(f.frontend, "orders", "GET", ["api", "orders-admin"])
		with data.mesh.egress as grants
}

test_a_workload_without_grants_may_call_nothing if {
	not egress.allowed with input as f.outbound(f.ops, "orders", "GET", ["api", "orders"])
		with data.mesh.egress as grants
}

test_an_inbound_request_is_never_an_egress_grant if {
	inbound := f.request("orders", "GET", ["api", "orders"], {"caller": f.caller(f.frontend)})
	not egress.allowed with input as inbound with data.mesh.egress as grants
	count(egress.failures) == 0 with input as inbound with data.mesh.egress as grants
}

test_a_refusal_names_workload_and_callee if {
	reasons := egress.failures with input as f.outbound(f.ops, "orders", "GET", ["api", "orders"])
		with data.mesh.egress as grants
	reasons == {sprintf("%s may not call orders: GET /api/orders", [f.ops])}
}
