# End-user rules: what the verified user token (input.wimse.user.token) must grant.
#
# A route's `user` section may hold:
#   any_role - the token's `roles` must contain at least one of these
#   scope    - a string that must be one of the token's `scope`
# Any `user` section requires a verified user token; its absence is reported on its own so
# the denial says "no token" rather than only "lacks role".
package wimse.user

import rego.v1

import data.wimse.routes.applying
import data.wimse.routes.service_label

failures contains sprintf("%s requires a verified user token", [service_label]) if {
	some rule in applying
	is_object(rule.user)
	not is_object(input.wimse.user.token)
}

failures contains sprintf("user lacks any of roles %v", [wanted]) if {
	some rule in applying
	wanted := rule.user.any_role
	not has_any_role(wanted)
}

has_any_role(wanted) if {
	held := input.wimse.user.token.roles
	is_array(held)
	some role in wanted
	role in held
}

failures contains sprintf("user token scope lacks %v", [wanted]) if {
	some rule in applying
	wanted := rule.user.scope
	not has_scope(wanted)
}

has_scope(wanted) if {
	granted := input.wimse.user.token.scope
	is_array(granted)
	wanted in granted
}
