//! What can go wrong in a time-driven run, with enough context to fix the input.

/// Errors from parsing a run's configuration or running it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    /// A cluster spec that does not parse or names an unknown GPU model.
    #[error("cluster spec '{spec}': {reason}")]
    Cluster { spec: String, reason: String },
    /// A policy name that does not parse.
    #[error(
        "policy '{spec}': {reason}; valid policies: whole, static, static:<layout> (e.g. static:3g+2g+2g), mps, dynamic, dynamic+mps"
    )]
    Policy { spec: String, reason: String },
    /// A static layout that does not exist or does not fit the GPU model.
    #[error("layout '{layout}' on {model}: {reason}")]
    Layout { layout: String, model: String, reason: String },
    /// A job names a model class the speed model does not know.
    #[error("job '{job}': unknown model_class '{class}'; valid classes: {valid} (or empty for the default curve)")]
    UnknownModelClass { job: String, class: String, valid: String },
    /// A job field the simulator cannot use.
    #[error("job '{job}': {reason}")]
    Job { job: String, reason: String },
    /// A configuration value out of range.
    #[error("invalid configuration: `{field}` {reason}")]
    Config { field: &'static str, reason: String },
    /// A duration such as `30s` that does not parse.
    #[error("duration '{value}': {reason}")]
    Duration { value: String, reason: String },
    /// Nothing to simulate.
    #[error("no jobs to simulate: {reason}")]
    NoJobs { reason: String },
}
