"""``qstep dap``: the Debug Adapter Protocol front end (editors: VS Code, nvim-dap, dape)."""
