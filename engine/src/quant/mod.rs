//! Quantized block formats: layouts, scalar reference dequantize/quantize/vec_dot.
