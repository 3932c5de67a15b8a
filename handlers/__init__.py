"""The edge: FastStream subscribers, HTTP routes and the CLI. Thin: translate, call, log."""
