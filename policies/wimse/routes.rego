# Route rules: what a service requires of a request beyond "who may call" (the grants).
#
# data.mesh.services[<service>].routes is a list of rules; a rule applies to a request when
# the method is in its `methods`, the path is under one of its `path_prefixes` and the
# immediate caller is one of its `callers` (any key may be left out to mean "any"). EVERY applying rule's requirements must hold, so a
# rule for ["api","payments","refunds"] only adds to the one for ["api","payments"].
# The requirement packages (chain, txn, user, attestation, domains) each read their own
# section of the applying rules and report `failures`; this one reports a path that prefix
# matching cannot be trusted on.
package wimse.routes

import rego.v1

# A rule applies unless the request is known to fall outside it. Written this way round, a
# request whose method or path is missing gets more requirements, never fewer.
applying contains rule if {
	some rule in data.mesh.services[input.wimse.service.name].routes
	not outside_methods(rule)
	not outside_paths(rule)
	not outside_callers(rule)
}

outside_methods(rule) if {
	listed := rule.methods
	method := input.attributes.request.http.method
	not method in listed
}

# A caller is outside a rule's `callers` only when it is known: an unauthenticated request
# gets the rule's requirements too (it is not admitted anyway).
outside_callers(rule) if {
	listed := rule.callers
	caller := input.wimse.caller.id
	is_string(caller)
	not caller in listed
}

outside_paths(rule) if {
	prefixes := rule.path_prefixes
	is_array(input.parsed_path)
	not under_any(input.parsed_path, prefixes)
}

under_any(path, prefixes) if {
	some prefix in prefixes
	has_prefix(path, prefix)
}

# Paths are compared segment by segment (["api","payments"] does not cover
# ["api","payments-admin"]); is_array guards keep count() from aborting evaluation.
has_prefix(path, prefix) if {
	is_array(path)
	is_array(prefix)
	count(path) >= count(prefix)
	array.slice(path, 0, count(prefix)) == prefix
}

# Labels for reason strings. Reasons are what make a failure count, so they are built only
# from values that are always defined: an undefined sprintf argument would drop the failure.
default service_label := "the service"

service_label := name if {
	name := input.wimse.service.name
	is_string(name)
}

default method_label := "this method"

method_label := method if {
	method := input.attributes.request.http.method
	is_string(method)
}

# Prefixes only mean something on a canonical path. `["api","payments","","refunds"]` or
# `["api","payments","refunds;x"]` match no refunds rule, yet an upstream that merges
# slashes or drops path parameters serves /api/payments/refunds. The gateway refuses such
# paths before policy (400 request.path_not_canonical); this keeps the policy safe on its
# own (another gateway, `policy eval`): such a request is denied, whatever else it carries.
failures contains "request path is not canonical" if non_canonical_path

# Only the last segment may be empty: `/` is [""], a trailing slash ends in "".
non_canonical_path if {
	path := input.parsed_path
	is_array(path)
	some i, segment in path
	i < count(path) - 1
	segment == ""
}

non_canonical_path if {
	path := input.parsed_path
	is_array(path)
	some segment in path
	non_canonical_segment(segment)
}

non_canonical_segment(segment) if not is_string(segment)

non_canonical_segment(segment) if segment in {".", ".."}

# Segments are percent-decoded: "/" was %2F, "\\" was %5C or a raw backslash.
non_canonical_segment(segment) if {
	is_string(segment)
	some text in [";", "/", "\\"]
	contains(segment, text)
}
