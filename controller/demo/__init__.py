"""The end-to-end demo: broker, controller and several agents as separate processes."""
