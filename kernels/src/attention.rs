//! Attention kernels (prefill: tiled, online softmax; decode: GQA-grouped).
