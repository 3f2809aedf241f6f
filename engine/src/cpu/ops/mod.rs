//! CPU kernels of the graph ops.
