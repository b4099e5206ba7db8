"""The ML-PulseChecker prediction server: Starlette + onnxruntime + orjson, nothing from training."""
