//! Quantised matmul: one parallel region over 2-D tiles, int8 micro-kernels.
