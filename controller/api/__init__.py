"""The controller's REST API (FastAPI). Import :func:`controller.api.app.create_app` to build it.

This package's ``__init__`` stays import-free so ``edgefleet --help`` does not load FastAPI.
"""
