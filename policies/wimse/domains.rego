# Cross-trust-domain rules: callers from outside the service's own trust domain.
#
# A foreign caller still needs a grant naming its exact identifier (wimse.callers); on top
# of that, every route rule applying to the request must list the method in its
# `foreign_methods`, and at least one rule must apply. So a foreign caller gets nothing on
# paths without route rules, and no write method unless a route lists it explicitly.
# Public paths are open to everyone, so they stay open to foreign callers too.
package wimse.domains

import rego.v1

import data.wimse.callers.public
import data.wimse.routes.applying
import data.wimse.routes.method_label
import data.wimse.routes.service_label

# A caller whose trust domain is missing counts as foreign.
foreign if {
	is_string(input.wimse.caller.id)
	not same_domain
}

same_domain if {
	is_string(input.wimse.service.trust_domain)
	input.wimse.caller.trust_domain == input.wimse.service.trust_domain
}

permitted if {
	count(applying) > 0
	method := input.attributes.request.http.method
	every rule in applying {
		method in rule.foreign_methods
	}
}

failures contains sprintf("%s accepts no %s from foreign trust domain %v", [service_label, method_label, caller_domain]) if {
	foreign
	not permitted
	not public
	caller_domain := object.get(input.wimse.caller, "trust_domain", "unknown")
}
