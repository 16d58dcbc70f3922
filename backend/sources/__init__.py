"""Cost sources: Azure Cost Management (Query API, Cost Details) and file imports (FOCUS, Azure exports); the demo estate lives in backend/demo."""
