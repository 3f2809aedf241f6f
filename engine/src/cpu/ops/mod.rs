//! CPU kernels of the graph ops. Each kernel works on plain slices; the executor hands every
//! thread its share.

pub mod attention;
pub mod elementwise;
pub mod norm;
pub mod rope;
