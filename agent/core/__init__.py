"""The ground floor: helpers every layer may use (device API, hub API, CLI).

Nothing here imports the daemon (``agent.*`` outside ``agent.core``): only the
standard library and, where a helper speaks HTTP, aiohttp. An import of the
daemon from here would bring back the package cycles issue 12 describes.
"""
