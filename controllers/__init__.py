"""HTTP API (aiohttp): app factory, routes, request/response models, error mapping."""
