//! Protocol A: FGD's packing experiment.
