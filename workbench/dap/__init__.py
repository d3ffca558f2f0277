"""`workbench dap`: a Debug Adapter Protocol server (stdio, or TCP on loopback) over the debugger."""
