# Transaction rules: what the verified Transaction Token (input.wimse.txn) must say.
#
# A route's `txn` section may hold:
#   required - true: the request must carry a verified Txn-Token
#   scope    - a string that must be one of txn.scope
#   tctx_max - {field: ceiling}: txn.tctx[field] must be present, numeric and <= ceiling
# scope and tctx_max fail without a token too, so `required` only adds a clearer reason.
package wimse.txn

import rego.v1

import data.wimse.routes.applying
import data.wimse.routes.service_label

failures contains sprintf("%s requires a transaction token", [service_label]) if {
	some rule in applying
	rule.txn.required == true
	not is_object(input.wimse.txn)
}

failures contains sprintf("transaction scope lacks %v", [wanted]) if {
	some rule in applying
	wanted := rule.txn.scope
	not has_scope(wanted)
}

has_scope(wanted) if {
	granted := input.wimse.txn.scope
	is_array(granted)
	wanted in granted
}

failures contains sprintf("transaction context %v is missing or not a number", [field]) if {
	some rule in applying
	some field, _ in rule.txn.tctx_max
	not as_number(input.wimse.txn.tctx[field])
}

failures contains sprintf("transaction context %v %v exceeds %v", [field, amount, ceiling]) if {
	some rule in applying
	some field, ceiling in rule.txn.tctx_max
	amount := as_number(input.wimse.txn.tctx[field])
	not at_most(amount, ceiling)
}

# A non-numeric ceiling in data must deny: Rego orders every number before every string,
# so `5000 <= "1000"` would be true.
at_most(amount, ceiling) if {
	is_number(ceiling)
	amount <= ceiling
}

as_number(value) := value if is_number(value)

# The draft's examples carry amounts as strings ("100"). to_number aborts the whole
# evaluation on a string it cannot parse (or one too long for a number), so only plain
# decimals of bounded length reach it; anything else is "not a number" and denies.
as_number(value) := to_number(value) if {
	is_string(value)
	regex.match(`^-?[0-9]{1,15}(\.[0-9]{1,15})?$`, value)
}
