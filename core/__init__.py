"""The base layer: settings, shared value types, text handling and model clients.

Every stage (ingest, retrieval, answer) and every tool on top imports from here; nothing here
imports a stage. See the README's "Architecture" section for the layers.
"""
