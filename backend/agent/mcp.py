"""`python -m backend.agent.mcp [--http [--port N]]`: the cost mart's MCP server (see backend.agent.mcp_server)."""

import sys

from backend.agent.mcp_server import main

if __name__ == "__main__":
    sys.exit(main())
