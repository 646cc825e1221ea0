"""Developer and demo tooling: key generation, a local token issuer, the demo stack.

A local issuer with limited authority, for tests and demos. The serving path never
imports this package (a test enforces it).
"""
