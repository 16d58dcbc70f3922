"""The cost agent: a governed LangChain tool-calling agent over the mart, with or without an LLM."""
