# Who may call: public paths for anyone, otherwise a grant naming the caller.
#
# data.mesh.services[<service>].callers is a list of grants {id, methods, path_prefixes}.
# A grant names one workload by its exact identifier: ids are compared as whole strings,
# never by prefix, so spiffe://demo.example/orders-evil gets nothing granted to .../orders.
package wimse.callers

import rego.v1

import data.wimse.routes.has_prefix
import data.wimse.routes.method_label

# Unauthenticated requests may read the public paths (health checks), nothing else.
public if {
	input.attributes.request.http.method in {"GET", "HEAD"}
	input.parsed_path in data.mesh.public_paths
}

granted if {
	some grant in data.mesh.services[input.wimse.service.name].callers
	grant.id == input.wimse.caller.id
	input.attributes.request.http.method in grant.methods
	some prefix in grant.path_prefixes
	has_prefix(input.parsed_path, prefix)
}

admitted if public

admitted if granted

authenticated if is_string(input.wimse.caller.id)

# The access decision uses `admitted` itself; these strings only explain a denial.
failures contains "no credentials and not a public path" if {
	not admitted
	not authenticated
}

failures contains sprintf("%s has no grant for %s %s", [caller_id, method_label, path]) if {
	not admitted
	caller_id := input.wimse.caller.id
	is_string(caller_id)
	path := object.get(input.attributes.request.http, "path", "this path")
}
