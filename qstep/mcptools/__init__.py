"""``qstep mcp``: the Model Context Protocol front end (tools for coding agents)."""
