"""The Transaction Token Service: issuing Txn-Tokens at the edge and by token exchange."""
