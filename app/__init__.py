"""Composition of vidlm, ingest and index: the pipeline, the CLI and the web app.

The only package that knows the whole flow; nothing imports it.
"""
