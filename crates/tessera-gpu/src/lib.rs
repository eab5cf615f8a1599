//! The GPU backend seam (being written).
