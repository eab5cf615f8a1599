//! The OpenAPI 3.1 document served at `/openapi.json`, written out by hand next to the router it
//! describes; a test checks that the router's routes, [`PATHS`] and the document agree.

use serde_json::{Value, json};

fn error_responses() -> Value {
    json!({
        "400": {"description": "Malformed JSON, unknown fields or bad parameters", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "401": {"description": "Unknown caller (no peer credentials, or a missing or wrong bearer token)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "403": {"description": "The caller may not do this (another user's job, or admin only)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "No such job, GPU or endpoint", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "409": {"description": "Conflicts with the state (the job has ended, an instance is busy)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "The body is larger than server.limits.max_body_bytes", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "422": {"description": "Well-formed but it can never run on this node (the message names the field and the limit: more CPUs or memory than a NUMA node has, more ranks or GPUs than the node, a MIG profile with MIG off)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
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

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}})
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
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Tessera", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Submit GPU work to a node; Tessera places it on a MIG slice next to the right CPUs, fairly among tenants. On the Unix socket the caller is the socket peer; on TCP, send `Authorization: Bearer <token>`."},
        "paths": {
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/jobs": {
                "post": submit,
                "get": op("The caller's active jobs (queued, placing, running); every filter narrows the list", json!([
                    {"name": "state", "in": "query", "schema": {"type": "string"}, "description": "comma-separated states (default: the active ones, or every state with history or since_ms)"},
                    {"name": "history", "in": "query", "schema": {"type": "boolean"}, "description": "ended jobs too"},
                    {"name": "since_ms", "in": "query", "schema": {"type": "integer"}, "description": "only jobs still active or ended at or after this time (ms since the epoch)"},
                    {"name": "user", "in": "query", "schema": {"type": "string"}, "description": "only this user's jobs (another user's: admins only)"},
                    {"name": "tenant", "in": "query", "schema": {"type": "string"}, "description": "only jobs charged to this tenant (admins: every user's)"},
                    {"name": "all", "in": "query", "schema": {"type": "boolean"}, "description": "every user's jobs (admins only)"}]), None, "Jobs")
            },
            "/v1/jobs/dry-run": {"post": op("What a submission would get now (the profile, each rank's instance and CPUs, the reconfiguration or preemption it needs, or why it would wait), queueing nothing; refused as a submission would be", json!([]), Some("SubmitRequest"), "The verdict")},
            "/v1/jobs/{id}": {"get": op("One job, with its state, reason and placement", json!([id_param()]), None, "The job")},
            "/v1/jobs/{id}/cancel": {"post": op("Cancel a job (SIGTERM, then SIGKILL after the grace period)", json!([id_param()]), None, "Cancelling")},
            "/v1/jobs/{id}/release": {"post": op("External work ended (its owner or an admin): the job ends succeeded or failed and its slices are free; 409 for a job Tessera runs (cancel it) or one that has ended", json!([id_param()]), Some("ReleaseRequest"), "The job after the release")},
            "/v1/work": {"post": work},
            "/v1/jobs/{id}/logs": {"get": op("A job's output, both streams of every rank in the order they were written (up to 1 MiB a reply)", json!([id_param(),
                {"name": "rank", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "only this rank (default: every rank)"},
                {"name": "stream", "in": "query", "schema": {"type": "string", "enum": ["stdout", "stderr"]}, "description": "only this stream (default: both)"},
                {"name": "from", "in": "query", "schema": {"type": "string"}, "description": "go on from a previous reply's `next`"},
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "without `from`: start at the last this many lines"}]), None, "LogChunk: `pieces` (rank, stream, time_ms or null, data as base64), `next` (the cursor to go on from), `more` (more is there now), `job_ended`, `ranks`")},
            "/v1/jobs/{id}/wait": {"get": op("Wait until the job ends", json!([id_param(),
                {"name": "timeout_ms", "in": "query", "schema": {"type": "integer"}}]), None, "The job")},
            "/v1/gpus": {"get": op("GPUs, instances, and which job runs where", json!([]), None, "Slice map")},
            "/v1/gpus/{gpu}/drain": {"post": op("Admins: place no new work on a GPU (kept across restarts); optional body {\"reason\": \"…\"}", json!([{"name": "gpu", "in": "path", "required": true, "schema": {"type": "integer"}}]), None, "Draining")},
            "/v1/gpus/{gpu}/health/clear": {"post": op("Admins: the GPU was reset or repaired; its faults clear at the next successful probe", json!([{"name": "gpu", "in": "path", "required": true, "schema": {"type": "integer"}}]), None, "The GPU's health")},
            "/v1/gpus/{gpu}/undrain": {"post": op("Admins: place work on a GPU again", json!([{"name": "gpu", "in": "path", "required": true, "schema": {"type": "integer"}}]), None, "Open")},
            "/v1/gpus/{gpu}/layout": {"post": op("Admins: change a GPU's MIG layout (busy instances are never touched; 409 names the ones in the way)", json!([{"name": "gpu", "in": "path", "required": true, "schema": {"type": "integer"}}]), Some("LayoutRequest"), "The steps and the resulting layout")},
            "/v1/events": {"get": op("What happened lately, newest first: jobs submitted, started and ended (the caller's own; an admin's: every user's), layout changes, Xid events, health clears and drains (every GPU's)", json!([
                {"name": "since_ms", "in": "query", "schema": {"type": "integer"}, "description": "only events at or after this time (ms since the epoch; default: the last hour)"},
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
                "instances": {"type": "array", "items": {"type": "string"}, "description": "PROFILE (wherever it fits best) or PROFILE@START for every entry; 1c.3g.40gb for a compute split; [] removes every idle instance"},
                "dry_run": {"type": "boolean"}
            }},
            "WorkRequest": {"type": "object", "additionalProperties": false, "required": ["request", "door", "key"], "properties": {
                "request": {"type": "object", "description": "The scheduler's job request, as SubmitRequest's resources; pin (a list of {gpu, profile_id, start}) holds exactly those instances"},
                "door": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$", "description": "which system runs the work (slurm); not a front door inside the daemon (kubernetes)"},
                "key": {"type": "string", "minLength": 1, "maxLength": 256, "description": "whose work it is in that system (a Slurm job id); no control characters"}
            }},
            "ReleaseRequest": {"type": "object", "additionalProperties": false, "required": ["succeeded"], "properties": {
                "succeeded": {"type": "boolean", "description": "the job ends succeeded, else failed"},
                "code": {"type": "integer", "description": "the work's exit code"},
                "signal": {"type": "integer", "description": "the signal that killed it"},
                "detail": {"type": "string", "maxLength": 1024, "description": "why it ended (the job's reason; default: released by the caller)"}
            }},
            "SubmitRequest": {"type": "object", "additionalProperties": false, "required": ["command", "cwd", "resources"], "properties": {
                "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "cwd": {"type": "string", "description": "absolute, existing and searchable by the caller"},
                "preempt_signal": {"type": "string", "description": "the signal a preempted job gets before SIGKILL (SIGTERM by default)"},
                "resources": {"type": "object", "description": "The scheduler's job request (unknown fields refused): gpu (memory_mib | compute_slices | profile | whole_gpu | instances), ranks, gpus_per_rank (whole GPUs per rank), gpu_numa_local, sharing (exclusive | mps | time_slice), cpus, mem_mib, numa, tenant, priority (above jobs.max_priority: admins only), runtime_estimate_ms, time_limit_ms, requeue (default true: may be preempted and queued again)"}
            }}
        }}
    })
}
