//! Tessera's C ABI (to come): a static and shared library behind `tessera.h`.
