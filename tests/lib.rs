//! Shared helpers of Tessera's integration tests: where the real models and fixtures live.
