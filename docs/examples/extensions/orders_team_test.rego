package extensions.orders_team_test

import rego.v1

import data.extensions.orders_team

order(tctx) := {
	"attributes": {"request": {"http": {"method": "POST"}}},
	"wimse": {"service": {"name": "orders"}, "txn": {"tctx": tctx}},
}

test_an_order_in_euros_passes if {
	count(orders_team.failures) == 0 with input as order({"currency": "EUR"})
}

test_an_order_in_dollars_is_refused if {
	orders_team.failures == {"orders are placed in EUR, not USD"} with input as order({"currency": "USD"})
}

test_an_order_naming_no_currency_is_not_its_business if {
	count(orders_team.failures) == 0 with input as order({"amount": 250})
}

test_other_services_are_not_its_business if {
	inp := json.patch(order({"currency": "USD"}), [{"op": "replace", "path": "/wimse/service/name", "value": "payments"}])
	count(orders_team.failures) == 0 with input as inp
}
