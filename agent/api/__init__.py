"""The local REST + WebSocket API (aiohttp), imported only when the API is first used."""
