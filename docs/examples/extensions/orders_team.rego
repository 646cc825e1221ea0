# An extension: the orders team's own requirement, added without editing the shipped entry
# policy. Dropped into policies/extensions/, it is the package extensions.orders_team, and
# every reason in its `failures` set refuses the request (docs/policies.md, "Extending the
# policy"). Extensions refuse; they never admit.
package extensions.orders_team

import rego.v1

# Orders are placed in euros: a checkout whose transaction names a currency names EUR.
failures contains sprintf("orders are placed in EUR, not %v", [currency]) if {
	input.wimse.service.name == "orders"
	input.attributes.request.http.method == "POST"
	currency := input.wimse.txn.tctx.currency
	currency != "EUR"
}
