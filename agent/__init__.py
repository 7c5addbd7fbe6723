"""edgefleet on-device agent: receives signed artifacts over MQTT, benchmarks them, commits or rolls back.

Imports nothing heavier than paho-mqtt, psutil, numpy and onnxruntime (the last two lazily), so it
runs on a device that has no room for torch, onnx or a web framework.
"""

__version__ = "0.1.0"
