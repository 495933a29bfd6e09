"""Models: signed manifests, the on-disk store, the manager that loads them, quantization.

Nothing here imports numpy or an inference engine at import time: the daemon
imports the store and manager at start, and engines load only with a model.
"""
