"""Batch scoring of every user with the served ONNX model, and the report of how good its predictions turned out."""
