"""Analytics on gold: anomaly detection, forecasts and budgets, written to the mart."""

from backend.analytics.budgets import evaluate_budgets
from backend.analytics.run import run_analytics

__all__ = ["evaluate_budgets", "run_analytics"]
