//! Stand-in libnvidia-ml (being written).
