//! The compute graph: ops, a per-layer builder and the arena planner.
