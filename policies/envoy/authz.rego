# The gateway's decision: the WIMSE policy library (../wimse/) composed into one answer.
#
# Decision rule: data.envoy.authz.decision (an OPA-Envoy decision object). Everything that
# varies per service lives in ../mesh/data.json (data.mesh): grants say who may call,
# route rules say what each request must also carry, so a change of policy is a data change.
# Teams add their own requirements without editing this file: a package under
# data.extensions (policies/extensions/<team>.rego) whose `failures` set names what a
# request lacks. Extensions only ever refuse; they cannot admit (docs/policies.md).
#
# Rules of other packages are imported one by one, never through their package
# (`import data.wimse.callers`, then `callers.admitted`): regorus evaluates every rule of a
# package referred to that way, which cost the allow path several times a single rule.
package envoy.authz

import rego.v1

import data.wimse.attestation.failures as attestation_failures
import data.wimse.callers.admitted
import data.wimse.callers.failures as caller_failures
import data.wimse.chain.failures as chain_failures
import data.wimse.domains.failures as domain_failures
import data.wimse.egress.allowed as egress_allowed
import data.wimse.egress.failures as egress_failures
import data.wimse.egress.outbound
import data.wimse.routes.applying
import data.wimse.routes.failures as path_failures
import data.wimse.txn.failures as txn_failures
import data.wimse.user.failures as user_failures

default allow := false

# Inbound: allowed when the caller is admitted (public path or a grant) AND no requirement
# of any applying route rule failed. Each package reports one reason per failed requirement.
allow if {
	not outbound
	admitted
	count(failures) == 0
}

# Outbound (the local workload calling out, docs/outbound.md): an egress grant, and a
# canonical path.
allow if {
	egress_allowed
	count(path_failures) == 0
	count(extension_failures) == 0
}

# Requirements come from route rules: with none applying, only the cross-domain rule and
# the path check can fail, so the requirement packages are not evaluated at all (regorus
# pays per rule). A non-canonical path fails on every route, public ones included.
failures := route_failures | domain_failures | path_failures | extension_failures

# Every team package's failures (data.extensions.<team>.failures), inbound and outbound.
extension_failures contains reason if {
	some extension in data.extensions
	some reason in extension.failures
}

default route_failures := set()

route_failures := chain_failures | txn_failures | user_failures | attestation_failures if {
	count(applying) > 0
}

reasons contains reason if {
	not allow
	not outbound
	some reason in caller_failures
}

reasons contains reason if {
	not outbound
	some reason in failures
}

reasons contains reason if {
	outbound
	some reason in egress_failures | path_failures | extension_failures
}

decision := {
	"allowed": allow,
	"reasons": reasons,
	"headers": {"x-authz-policy": "envoy.authz"},
}
