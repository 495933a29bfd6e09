"""Plugins: sensor sources, detectors, voice skills and alert sinks, each in a process of its own.

``manifest`` (plugin.toml: kinds, permissions, settings schema) · ``signing``
(publisher signatures, the models' trust store) · ``store`` (installed plugins,
state, status, logs) · ``host`` (the daemon's ``plugins`` service) · ``process``
(one plugin process: spawn, IPC, heartbeat, back-off) · ``ipc`` (JSON lines on a
socket pair) · ``runner`` + ``sandbox`` + ``sdk`` (the plugin's side) ·
``scaffold`` (``plugins new`` / ``plugins pack``) · ``commands`` (hub commands).
See docs/plugins.md.
"""
