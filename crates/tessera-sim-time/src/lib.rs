//! Protocol B: time-driven replay through the scheduler core.
