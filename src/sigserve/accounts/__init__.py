"""Who may call, how often, and what they used: API keys (keys.py), rate limits and quotas
(ratelimit.py) and usage metering (usage.py). Nothing here knows about HTTP: the server's
access layer (sigserve.server.access) and the `sigserve keys` / `sigserve usage` commands use it."""
