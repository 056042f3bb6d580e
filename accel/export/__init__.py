"""Exported models: ONNX (float or Q/DQ) checked against PyTorch with ONNX Runtime, and ONNX Runtime sessions
as denoisers (``accel export onnx``, ``accel eval --model x.onnx``)."""
