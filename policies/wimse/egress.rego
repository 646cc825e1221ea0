# Egress: whom the local workload may call, decided on its outbound listener before the
# gateway attaches the workload's credentials (docs/outbound.md).
#
# data.mesh.egress[<workload id>] is a list of grants {callee, methods, path_prefixes}: the
# callee by its name in the gateway's outbound.callees, the path as the callee will see it
# (after a declared route rewrite). A workload with no entry may call nothing.
package wimse.egress

import rego.v1

import data.wimse.routes.has_prefix

outbound if input.wimse.direction == "outbound"

allowed if {
	outbound
	some grant in data.mesh.egress[input.wimse.workload.id]
	grant.callee == input.wimse.callee.name
	input.attributes.request.http.method in grant.methods
	some prefix in grant.path_prefixes
	has_prefix(input.wimse.callee.parsed_path, prefix)
}

failures contains sprintf("%s may not call %s: %s %s", [workload, callee, method, path]) if {
	outbound
	not allowed
	workload := input.wimse.workload.id
	callee := input.wimse.callee.name
	method := input.attributes.request.http.method
	path := input.wimse.callee.path
}
