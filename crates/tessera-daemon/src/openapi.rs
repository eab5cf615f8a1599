//! The OpenAPI 3.1 document served at `/openapi.json`, written out by hand next to the router it
//! describes; a test checks that the router's routes, [`PATHS`] and the document agree.

use serde_json::{Value, json};

fn error_responses() -> Value {
    json!({
        "400": {"description": "Malformed JSON, unknown fields or bad parameters", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "401": {"description": "Unknown caller (no peer credentials, or a missing or wrong bearer token)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "403": {"description": "The caller may not do this (another user's job, or admin only)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "No such job, GPU, rank or endpoint, or no such user or tenant as a listing names", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "409": {"description": "Conflicts with the state (the job has ended, an instance is busy)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "The body is larger than server.limits.max_body_bytes", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "422": {"description": "Well-formed but it can never run on this node (the message names the field and the limit: more CPUs or memory than a NUMA node has, more ranks or GPUs than the node, a MIG profile with MIG off, a layout naming a profile the GPU's model lacks)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "Too many connections from this caller (server.limits)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn op(summary: &str, params: Value, body: Option<&str>, ok: &str) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}});
    let mut o = json!({"summary": summary, "parameters": params, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

/// A GPU index in a path: a `u32`, as the server parses it.
fn gpu_param() -> Value {
    json!({"name": "gpu", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}})
}

/// A time or duration in milliseconds: a `u64`, as the server parses it.
fn millis() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}

/// A comma-separated list of job states, as `GET /v1/jobs?state=` parses it.
fn states_pattern() -> String {
    let one = "(queued|placing|running|succeeded|failed|cancelled|timed_out|oom_killed|lost)";
    format!("^{one}(,{one})*$")
}

/// Text without control characters (what the server's `char::is_control` refuses).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": u64::MAX}})
}

/// Every documented path, for the router test.
pub const PATHS: &[&str] = &[
    "/openapi.json",
    "/v1/jobs",
    "/v1/jobs/dry-run",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/cancel",
    "/v1/jobs/{id}/release",
    "/v1/jobs/{id}/logs",
    "/v1/jobs/{id}/wait",
    "/v1/work",
    "/v1/gpus",
    "/v1/gpus/{gpu}/drain",
    "/v1/gpus/{gpu}/undrain",
    "/v1/gpus/{gpu}/layout",
    "/v1/gpus/{gpu}/health/clear",
    "/v1/health",
    "/v1/events",
    "/metrics",
];

/// The scheduler's job request (`tessera_sched::JobRequest`, unknown fields refused) and its GPU
/// request, as serde reads them.
fn job_request_schemas() -> Value {
    json!({
            "GpuRequest": {"description": "The GPU capacity one rank needs", "oneOf": [
                {"type": "string", "enum": ["whole_gpu"]},
                {"type": "object", "additionalProperties": false, "required": ["memory"], "properties": {"memory": {"type": "object", "additionalProperties": false, "required": ["mib"], "properties": {"mib": {"type": "integer", "minimum": 1, "maximum": u64::MAX}}}}},
                {"type": "object", "additionalProperties": false, "required": ["compute_slices"], "properties": {"compute_slices": {"type": "object", "additionalProperties": false, "required": ["slices"], "properties": {"slices": {"type": "integer", "minimum": 1, "maximum": u8::MAX}}}}},
                {"type": "object", "additionalProperties": false, "required": ["profile"], "properties": {"profile": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {"name": {"type": "string"}}}}},
                {"type": "object", "additionalProperties": false, "required": ["instances"], "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": 16, "items": {"not": {"type": "object", "required": ["instances"]}, "$ref": "#/components/schemas/GpuRequest"}}}}
            ]},
            "JobRequest": {"type": "object", "additionalProperties": false, "required": ["gpu"], "description": "The scheduler's job request", "properties": {
                "gpu": {"$ref": "#/components/schemas/GpuRequest"},
                "ranks": {"type": "integer", "minimum": 1, "maximum": tessera_sched::MAX_RANKS, "description": "processes started together, each with its own instance(s) (default 1)"},
                "gpus_per_rank": {"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "whole GPUs per rank (above 1 only with gpu whole_gpu)"},
                "gpu_numa_local": {"type": "boolean"},
                "sharing": {"oneOf": [
                    {"type": "string", "enum": ["exclusive", "time_slice"]},
                    {"type": "object", "additionalProperties": false, "required": ["mps"], "properties": {"mps": {"type": "object", "additionalProperties": false, "required": ["active_thread_pct"], "properties": {
                        "active_thread_pct": {"type": "integer", "minimum": 1, "maximum": 100},
                        "pinned_mem_mib": {"type": ["integer", "null"], "minimum": 1, "maximum": u64::MAX}}}}}
                ]},
                "cpus": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "CPU cores per rank"},
                "mem_mib": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": "host memory per rank, MiB"},
                "numa": {"type": "string", "enum": ["local", "any"]},
                "tenant": {"type": "string", "description": "a configured tenant (another than the caller's: admins only); empty: the caller's"},
                "priority": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX, "description": "higher runs first (above jobs.max_priority: admins only)"},
                "runtime_estimate_ms": {"type": ["integer", "null"], "minimum": 1, "maximum": u64::MAX},
                "time_limit_ms": {"type": ["integer", "null"], "minimum": 1, "maximum": u64::MAX},
                "requeue": {"type": "boolean", "description": "default true: may be preempted and queued again"},
                "pin": {"type": "array", "description": "external work only: exactly these existing instances", "items": {"type": "object", "additionalProperties": false, "required": ["gpu", "profile_id", "start"], "properties": {
                    "gpu": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                    "profile_id": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                    "start": {"type": "integer", "minimum": 0, "maximum": u8::MAX}}}}
            }}
    })
}

pub fn document() -> Value {
    let mut submit = op("Submit a job; returns its id", json!([]), Some("SubmitRequest"), "Created");
    submit["responses"]["201"] = json!({"description": "Queued", "content": {"application/json": {"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}}});
    let mut work = op(
        "Admins: queue work another system runs (a Slurm job): Tessera decides and holds its slices, starting nothing; read them back with GET /v1/jobs/{id} once it runs, end it with POST /v1/jobs/{id}/release. 403 for non-admins (it holds slices without running anything); 400 names a bad door or key",
        json!([]),
        Some("WorkRequest"),
        "Created",
    );
    work["responses"]["201"] = submit["responses"]["201"].clone();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Tessera", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Submit GPU work to a node; Tessera places it on a MIG slice next to the right CPUs, fairly among tenants. On the Unix socket the caller is the socket peer; on TCP, send `Authorization: Bearer <token>`."},
        "paths": {
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/jobs": {
                "post": submit,
                "get": op("The caller's active jobs (queued, placing, running), one page by increasing id; every filter narrows the list; `next` (when not null) is the `after` of the next page", json!([
                    {"name": "state", "in": "query", "schema": {"type": "string", "pattern": states_pattern()}, "description": "comma-separated states (default: the active ones, or every state with history or since_ms)"},
                    {"name": "history", "in": "query", "schema": {"type": "boolean"}, "description": "ended jobs too"},
                    {"name": "since_ms", "in": "query", "schema": millis(), "description": "only jobs still active or ended at or after this time (ms since the epoch)"},
                    {"name": "user", "in": "query", "schema": {"type": "string"}, "description": "only this user's jobs (another user's: admins only)"},
                    {"name": "tenant", "in": "query", "schema": {"type": "string"}, "description": "only jobs charged to this tenant (admins: every user's)"},
                    {"name": "all", "in": "query", "schema": {"type": "boolean"}, "description": "every user's jobs (admins only)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": crate::wire::JobQuery::MAX_LIMIT}, "description": "at most this many jobs (default 500, at most 1000)"},
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "only jobs with a higher id: the previous page's `next`"}]), None, "JobList: `jobs` (one page) and `next` (the cursor of the next page, or null)")
            },
            "/v1/jobs/dry-run": {"post": op("What a submission would get now (the profile, each rank's instance and CPUs, the reconfiguration or preemption it needs, or why it would wait), queueing nothing; refused as a submission would be", json!([]), Some("SubmitRequest"), "The verdict")},
            "/v1/jobs/{id}": {"get": op("One job, with its state, reason and placement", json!([id_param()]), None, "The job")},
            "/v1/jobs/{id}/cancel": {"post": op("Cancel a job (SIGTERM, then SIGKILL after the grace period)", json!([id_param()]), None, "Cancelling")},
            "/v1/jobs/{id}/release": {"post": op("External work ended (its owner or an admin): the job ends succeeded or failed and its slices are free; 409 for a job Tessera runs (cancel it) or one that has ended", json!([id_param()]), Some("ReleaseRequest"), "The job after the release")},
            "/v1/work": {"post": work},
            "/v1/jobs/{id}/logs": {"get": op("A job's output, both streams of every rank in the order they were written (up to 1 MiB a reply)", json!([id_param(),
                {"name": "rank", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}, "description": "only this rank (default: every rank)"},
                {"name": "stream", "in": "query", "schema": {"type": "string", "enum": ["stdout", "stderr"]}, "description": "only this stream (default: both)"},
                {"name": "from", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,19}(,[0-9]{1,9}[oe][0-9]{1,19})*$"}, "description": "go on from a previous reply's `next`"},
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "description": "without `from`: start at the last this many lines"}]), None, "LogChunk: `pieces` (rank, stream, time_ms or null, data as base64), `next` (the cursor to go on from), `more` (more is there now), `job_ended`, `ranks`")},
            "/v1/jobs/{id}/wait": {"get": op("Wait until the job ends", json!([id_param(),
                {"name": "timeout_ms", "in": "query", "schema": millis(), "description": "at most this long (default 30000; more than 300000 waits 300000)"}]), None, "The job")},
            "/v1/gpus": {"get": op("GPUs, instances, and which job runs where", json!([]), None, "Slice map")},
            "/v1/gpus/{gpu}/drain": {"post": op("Admins: place no new work on a GPU (kept across restarts); optional body {\"reason\": \"…\"}", json!([gpu_param()]), None, "Draining")},
            "/v1/gpus/{gpu}/health/clear": {"post": op("Admins: the GPU was reset or repaired; its faults clear at the next successful probe", json!([gpu_param()]), None, "The GPU's health")},
            "/v1/gpus/{gpu}/undrain": {"post": op("Admins: place work on a GPU again", json!([gpu_param()]), None, "Open")},
            "/v1/gpus/{gpu}/layout": {"post": op("Admins: change a GPU's MIG layout (busy instances are never touched; 409 names the ones in the way)", json!([gpu_param()]), Some("LayoutRequest"), "The steps and the resulting layout")},
            "/v1/events": {"get": op("What happened lately, newest first: jobs submitted, started and ended (the caller's own; an admin's: every user's), layout changes, Xid events, health clears and drains (every GPU's)", json!([
                {"name": "since_ms", "in": "query", "schema": millis(), "description": "only events at or after this time (ms since the epoch; default: the last hour)"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 500}, "description": "at most this many, the newest (default 50, at most 500)"}]), None, "NodeEventList: `events`, each with at_ms, kind (job_submitted, job_started, job_ended, layout, xid, health_cleared, drained), gpu, job and text")},
            "/v1/health": {"get": op("Node health: jobs by state, per-GPU and per-instance health with the last Xid events, drains, isolation", json!([]), None, "Health")},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (OpenMetrics text): GPUs and instances with dcgm-exporter's labels, slices by state, holders, live jobs by state and tenant",
                "responses": {"200": {"description": "OpenMetrics text", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}
            }}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "LayoutRequest": {"type": "object", "additionalProperties": false, "required": ["instances"], "properties": {
                "instances": {"type": "array", "maxItems": 32, "anyOf": [
                    {"items": {"type": "string", "pattern": "^([0-9]{1,2}c\\.)?[0-9]{1,2}g\\.[0-9]{1,4}gb(\\+[a-z]{1,8})*$"}},
                    {"items": {"type": "string", "pattern": "^([0-9]{1,2}c\\.)?[0-9]{1,2}g\\.[0-9]{1,4}gb(\\+[a-z]{1,8})*@[0-9]{1,2}$"}}
                ], "description": "PROFILE (wherever it fits best) or PROFILE@START for every entry; 1c.3g.40gb for a compute split; [] removes every idle instance"},
                "dry_run": {"type": "boolean"}
            }},
            "WorkRequest": {"type": "object", "additionalProperties": false, "required": ["request", "door", "key"], "properties": {
                "request": {"$ref": "#/components/schemas/JobRequest", "description": "The scheduler's job request, as SubmitRequest's resources; pin (a list of {gpu, profile_id, start}) holds exactly those instances"},
                "door": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$", "description": "which system runs the work (slurm); not a front door inside the daemon (kubernetes)"},
                "key": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_CONTROL, "description": "whose work it is in that system (a Slurm job id); no control characters"}
            }},
            "ReleaseRequest": {"type": "object", "additionalProperties": false, "required": ["succeeded"], "properties": {
                "succeeded": {"type": "boolean", "description": "the job ends succeeded, else failed"},
                "code": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX, "description": "the work's exit code"},
                "signal": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX, "description": "the signal that killed it"},
                "detail": {"type": "string", "maxLength": 1024, "pattern": NO_CONTROL, "description": "why it ended (the job's reason; default: released by the caller)"}
            }},
            "SubmitRequest": {"type": "object", "additionalProperties": false, "required": ["command", "cwd", "resources"], "properties": {
                "command": {"type": "array", "items": {"type": "string", "pattern": "^[^\\u0000]*$"}, "minItems": 1, "description": "the program (found on the job's PATH, non-empty) and its arguments; no NUL bytes"},
                "env": {"type": "object", "propertyNames": {"pattern": "^[^=\\u0000]+$"}, "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"}, "description": "names without '=' or NUL, values without NUL"},
                "cwd": {"type": "string", "pattern": "^/", "description": "absolute, existing and searchable by the caller"},
                "preempt_signal": {"type": "string", "pattern": "^((SIG)?(HUP|INT|QUIT|USR1|USR2|ALRM|TERM|CONT|XCPU|PWR|WINCH)|(sig)?(hup|int|quit|usr1|usr2|alrm|term|cont|xcpu|pwr|winch)|1|2|3|10|12|14|15|18|24|30|28)$", "description": "the signal a preempted job gets before SIGKILL (SIGTERM by default), by name (SIGUSR1, USR1) or number"},
                "resources": {"$ref": "#/components/schemas/JobRequest"}
            }}
        }}
    });
    if let (Some(schemas), Value::Object(more)) = (doc["components"]["schemas"].as_object_mut(), job_request_schemas())
    {
        schemas.extend(more);
    }
    doc
}
