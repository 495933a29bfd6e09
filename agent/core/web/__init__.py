"""The web consoles' shell, shared by the box (agent/web) and the hub (sync/hub/web).

Sessions and login (``session``), page rendering and versioned static assets
(``render``), the layout and login pages, the console's stylesheet and common
script, and the vendored uPlot. Each console adds its own pages and script.
"""
