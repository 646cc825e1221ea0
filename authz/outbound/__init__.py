"""Outbound mode: the caller's half of WIMSE on egress."""
