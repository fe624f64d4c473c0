"""HTTP served by the router: /metrics, /healthz and /readyz."""
