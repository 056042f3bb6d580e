"""Post-training quantization of denoisers (Q-Diffusion-style): quantizers, quantized layers, calibration."""
