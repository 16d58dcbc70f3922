"""Analytics on gold: anomaly detection, forecasts and budgets, written to the mart."""
