"""Streamlit UI: the entry point and the pieces pages share."""
