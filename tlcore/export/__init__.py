"""Models out: writing bundles of ONNX + safetensors that run anywhere, and loading them."""
