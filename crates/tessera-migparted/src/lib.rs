//! mig-parted config format (being written).
