"""The demo: a generated Azure estate (its price list, the source that delivers it, a fake Azure tenant serving it) and its lifecycle beside real data."""
