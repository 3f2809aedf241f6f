//! Dot-product kernels of every weight format against its activation format, chosen at run time.
