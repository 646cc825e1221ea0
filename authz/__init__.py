"""wimse-authz: an Envoy ext_authz gateway for WIMSE workload credentials and Rego policy."""

__version__ = "0.1.0"
