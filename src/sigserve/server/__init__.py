"""HTTP server: app factory, routes and the parts it wires together."""
