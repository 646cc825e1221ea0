# The gateway's decision: the WIMSE policy library (../wimse/) composed into one answer.
#
# Decision rule: data.envoy.authz.decision (an OPA-Envoy decision object). Everything that
# varies per service lives in ../mesh/data.json (data.mesh): grants say who may call,
# route rules say what each request must also carry, so a change of policy is a data change.
package envoy.authz

import rego.v1

import data.wimse.attestation
import data.wimse.callers
import data.wimse.chain
import data.wimse.domains
import data.wimse.txn
import data.wimse.routes
import data.wimse.user

default allow := false

# Allowed when the caller is admitted (public path or a grant) AND no requirement of any
# applying route rule failed. Each package reports one reason per failed requirement.
allow if {
	callers.admitted
	count(failures) == 0
}

# Requirements come from route rules: with none applying, only the cross-domain rule and
# the path check can fail, so the requirement packages are not evaluated at all (regorus
# pays per rule). A non-canonical path fails on every route, public ones included.
failures := route_failures | domains.failures | routes.failures

default route_failures := set()

route_failures := chain.failures | txn.failures | user.failures | attestation.failures if {
	count(routes.applying) > 0
}

reasons contains reason if {
	not allow
	some reason in callers.failures
}

reasons contains reason if some reason in failures

decision := {
	"allowed": allow,
	"reasons": reasons,
	"headers": {"x-authz-policy": "envoy.authz"},
}
