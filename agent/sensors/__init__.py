"""Factory sensors: sources, validation, anomaly detectors, alert policy and the sensor service.

Importing this package is cheap; numpy and the detectors load only when the
sensor service starts (``agent.sensors.service``), so a box with sensors
disabled does not carry them.
"""
