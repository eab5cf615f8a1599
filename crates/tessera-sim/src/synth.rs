//! Synthetic workloads: Poisson arrivals, a size mix, durations.
