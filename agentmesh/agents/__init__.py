"""Agent backends: what a node hosts and how it calls it (local callables today; Mastra, A2A, MCP next)."""
