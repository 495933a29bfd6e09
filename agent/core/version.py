"""The release every part reports (daemon, hub, CLI banners, APIs): one number, kept with pyproject.toml's."""

__version__ = "0.1.0"
