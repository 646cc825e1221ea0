package wimse.domains_test

import rego.v1

import data.wimse.domains
import data.wimse.fixtures as f

read_only := {"methods": ["GET"], "foreign_methods": ["GET"]}

writes := {"methods": ["POST"]}

mesh(rules) := {"public_paths": [["healthz"]], "trusted_domains": ["demo.example"], "services": {"shop": {"callers": [], "routes": rules}}}

failures_for(rules, workload_id, method) := found if {
	found := domains.failures with data.mesh as mesh(rules)
		with input as f.request("shop", method, ["api", "orders"], {"caller": f.caller(workload_id)})
}

test_same_domain_caller_needs_nothing if {
	failures_for([writes], f.frontend, "POST") == set()
	failures_for([], f.frontend, "DELETE") == set()
}

test_foreign_read_allowed_where_listed if {
	failures_for([read_only, writes], f.reseller, "GET") == set()
}

test_foreign_write_denied if {
	failures_for([read_only, writes], f.reseller, "POST") == {"shop accepts no POST from foreign trust domain partner.example"}
}

test_foreign_write_allowed_only_when_listed if {
	listed := {"methods": ["POST"], "foreign_methods": ["POST"]}
	failures_for([read_only, listed], f.reseller, "POST") == set()
}

test_foreign_caller_denied_where_no_rule_applies if {
	failures_for([], f.reseller, "GET") == {"shop accepts no GET from foreign trust domain partner.example"}
}

# Every applying rule must accept the foreign method, not just one of them.
test_every_applying_rule_must_list_the_method if {
	broad := {"foreign_methods": ["GET"]}
	narrow := {"methods": ["GET"], "path_prefixes": [["api", "orders"]]}
	count(failures_for([broad, narrow], f.reseller, "GET")) == 1
}

test_caller_without_trust_domain_is_foreign if {
	inp := f.request("shop", "GET", ["api", "orders"], {"caller": {"id": f.frontend}})
	found := domains.failures with data.mesh as mesh([]) with input as inp
	found == {"shop accepts no GET from foreign trust domain unknown"}
}

test_unauthenticated_requests_are_not_foreign if {
	found := domains.failures with data.mesh as mesh([]) with input as f.request("shop", "GET", ["healthz"], {})
	found == set()
}

test_public_paths_stay_public_for_foreign_callers if {
	inp := f.request("shop", "GET", ["healthz"], {"caller": f.caller(f.reseller)})
	found := domains.failures with data.mesh as mesh([]) with input as inp
	found == set()
}
