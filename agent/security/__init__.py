"""Security: device identity, hub trust, API tokens, sealed secrets, audit log, signed updates, licence.

Every module here imports its crypto (pynacl) inside the functions that need
it, so importing ``agent.security`` costs the idle daemon nothing.
"""
