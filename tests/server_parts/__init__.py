"""Tests of the server parts: keys, usage, rate limits, image fetching, keys CLI."""
