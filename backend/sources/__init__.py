"""Cost sources: Azure Cost Management (Query API, Cost Details), file imports (FOCUS, Azure exports), the synthetic estate."""
