# Sample mesh policy: which workloads may call which service, on which paths.
#
# Decision rule: data.envoy.authz.decision (an OPA-Envoy decision object). The per-service
# allow-lists live in ../mesh/data.json (data.mesh), so adding a caller is a data change.
package envoy.authz

import rego.v1

default allow := false

http := input.attributes.request.http

caller := input.wimse.caller

service := input.wimse.service.name

# Unauthenticated requests may read the service's public health endpoint, nothing else.
allow if {
	http.method in {"GET", "HEAD"}
	input.parsed_path in data.mesh.public_paths
}

# Authenticated workloads: allowed when an entry for this service names the caller's exact
# identifier, the method, and a path prefix (compared segment by segment, never as text).
allow if {
	some grant in data.mesh.services[service].callers
	grant.id == caller.id
	http.method in grant.methods
	some prefix in grant.path_prefixes
	path_has_prefix(input.parsed_path, prefix)
}

path_has_prefix(path, prefix) if {
	count(path) >= count(prefix)
	array.slice(path, 0, count(prefix)) == prefix
}

reasons contains "no credentials and not a public path" if {
	not allow
	caller == null
}

reasons contains sprintf("%s has no grant for %s %s", [caller.id, http.method, http.path]) if {
	not allow
	caller != null
}

decision := {
	"allowed": allow,
	"reasons": reasons,
	"headers": {"x-authz-policy": "envoy.authz"},
}
