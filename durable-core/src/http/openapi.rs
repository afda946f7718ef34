//! The OpenAPI 3 description served at `/api/openapi.json`, written by
//! hand. A test checks it against the router: every documented path and
//! method is served, and every served route is documented.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::routes::{DEFAULT_EVENTS_LIMIT, MAX_LIST_PAGE};
use crate::MAX_PAGE;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn instance_id_param() -> Value {
    path_param(
        "id",
        "The instance id (1 to 256 bytes of UTF-8 without control characters), percent-encoded.",
    )
}

fn reason_param() -> Value {
    query_param(
        "reason",
        "Why, recorded in the history.",
        json!({ "type": "string" }),
    )
}

fn any_json_body(description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": { "application/json": { "schema": {} } }
    })
}

fn control(summary: &str, operation_id: &str, conflict: &str) -> Value {
    json!({
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "parameters": [instance_id_param(), reason_param()],
            "responses": {
                "202": { "description": "Accepted: the instance receives the request on its next turn." },
                "400": error_response("Invalid instance id or query parameter."),
                "404": error_response("No such instance."),
                "409": error_response(conflict),
            }
        }
    })
}

fn schemas() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "A stable machine-readable code, such as instance_not_found." },
                        "message": { "type": "string" }
                    }
                }
            }
        },
        "RuntimeStatus": {
            "type": "string",
            "enum": ["Pending", "Running", "Suspended", "Completed", "Failed", "Terminated"]
        },
        "FailureDetails": {
            "type": "object",
            "properties": { "errorType": { "type": "string" }, "errorMessage": { "type": "string" } }
        },
        "InstanceStatus": {
            "type": "object",
            "required": ["instanceId", "name", "runtimeStatus", "createdTime", "lastUpdatedTime", "streamLength"],
            "properties": {
                "instanceId": { "type": "string" },
                "name": { "type": "string", "description": "The orchestration name." },
                "executionId": { "type": "string" },
                "runtimeStatus": { "$ref": "#/components/schemas/RuntimeStatus" },
                "input": { "description": "The input of the current execution." },
                "output": { "description": "The output once completed, the reason once terminated; else null." },
                "customStatus": { "description": "The last custom status the orchestration set, or null." },
                "failureDetails": {
                    "nullable": true,
                    "allOf": [{ "$ref": "#/components/schemas/FailureDetails" }]
                },
                "createdTime": { "type": "string", "format": "date-time" },
                "lastUpdatedTime": { "type": "string", "format": "date-time" },
                "completedTime": { "type": "string", "format": "date-time", "nullable": true },
                "streamLength": { "type": "integer", "minimum": 0, "description": "The number of stream events (the last sequence number)." }
            }
        },
        "InstanceList": {
            "type": "object",
            "properties": {
                "instances": { "type": "array", "items": { "$ref": "#/components/schemas/InstanceStatus" } },
                "continuationToken": { "type": "string", "nullable": true, "description": "Pass as continuationToken for the next page; null on the last page." }
            }
        },
        "StartResponse": {
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "instanceId": { "type": "string" },
                "statusQueryGetUri": { "type": "string" },
                "eventsUri": { "type": "string" },
                "streamUri": { "type": "string" },
                "sendEventPostUri": { "type": "string", "description": "With an {eventName} placeholder." },
                "raiseEventPostUri": { "type": "string", "description": "The same as sendEventPostUri." },
                "terminatePostUri": { "type": "string", "description": "With a {text} placeholder for the reason." },
                "suspendPostUri": { "type": "string" },
                "resumePostUri": { "type": "string" },
                "purgeHistoryDeleteUri": { "type": "string" }
            }
        },
        "StreamEvent": {
            "type": "object",
            "properties": {
                "seq": { "type": "integer", "minimum": 1, "description": "The sequence number: 1, 2, 3, ... without gaps." },
                "name": { "type": "string" },
                "payload": { "description": "The JSON payload." },
                "emittedAt": { "type": "string", "format": "date-time" },
                "executionId": { "type": "string" }
            }
        },
        "EventPage": {
            "type": "object",
            "properties": {
                "instanceId": { "type": "string" },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/StreamEvent" } },
                "nextCursor": { "type": "integer", "description": "Pass as after= to read on." },
                "finished": { "type": "boolean", "description": "The instance is terminal and every event has been read." }
            }
        }
    })
}

fn paths(known: Option<&BTreeSet<String>>) -> Value {
    let mut name_schema = json!({ "type": "string" });
    if let Some(known) = known {
        name_schema["enum"] = json!(known);
    }
    let cursor = json!({ "type": "integer", "minimum": 0, "default": 0 });
    json!({
        "/api/orchestrations/{name}": {
            "post": {
                "summary": "Start an orchestration instance",
                "operationId": "startOrchestration",
                "parameters": [
                    { "name": "name", "in": "path", "required": true, "description": "The orchestration name.", "schema": name_schema },
                    query_param("instanceId", "The instance id; a random one when absent.", json!({ "type": "string" }))
                ],
                "requestBody": any_json_body("The input, any JSON value (empty means null)."),
                "responses": {
                    "202": {
                        "description": "Started: the instance id and links to it.",
                        "headers": { "Location": { "description": "The statusQueryGetUri.", "schema": { "type": "string" } } },
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StartResponse" } } }
                    },
                    "400": error_response("Malformed JSON, invalid instance id or query parameter."),
                    "404": error_response("No orchestration of this name is registered."),
                    "409": error_response("An instance with this id exists and is not terminal."),
                    "413": error_response("The body is larger than the limit.")
                }
            }
        },
        "/api/instances": {
            "get": {
                "summary": "List instances, oldest first",
                "operationId": "listInstances",
                "parameters": [
                    query_param("runtimeStatus", "Only these statuses: repeat the parameter or separate with commas.", json!({ "type": "array", "items": { "$ref": "#/components/schemas/RuntimeStatus" } })),
                    query_param("name", "Only instances of this orchestration.", json!({ "type": "string" })),
                    query_param("createdFrom", "Only instances created at or after this time (RFC 3339).", json!({ "type": "string", "format": "date-time" })),
                    query_param("createdTo", "Only instances created before this time (RFC 3339).", json!({ "type": "string", "format": "date-time" })),
                    query_param("pageSize", "The page size.", json!({ "type": "integer", "minimum": 1, "maximum": MAX_LIST_PAGE, "default": 100 })),
                    query_param("continuationToken", "The continuationToken of the previous page.", json!({ "type": "string" }))
                ],
                "responses": {
                    "200": json_response("A page of instances.", "InstanceList"),
                    "400": error_response("A bad filter, page size or continuation token.")
                }
            }
        },
        "/api/instances/{id}": {
            "get": {
                "summary": "Get an instance's status",
                "operationId": "getInstance",
                "parameters": [instance_id_param()],
                "responses": {
                    "200": json_response("The instance's status.", "InstanceStatus"),
                    "400": error_response("Invalid instance id."),
                    "404": error_response("No such instance.")
                }
            },
            "delete": {
                "summary": "Purge a terminal instance with its history and stream",
                "operationId": "purgeInstance",
                "parameters": [instance_id_param()],
                "responses": {
                    "200": {
                        "description": "Purged.",
                        "content": { "application/json": { "schema": { "type": "object", "properties": { "instancesDeleted": { "type": "integer" } } } } }
                    },
                    "400": error_response("Invalid instance id."),
                    "404": error_response("No such instance."),
                    "409": error_response("The instance is not terminal.")
                }
            }
        },
        "/api/instances/{id}/raiseEvent/{event}": {
            "post": {
                "summary": "Raise an external event",
                "operationId": "raiseEvent",
                "parameters": [
                    instance_id_param(),
                    path_param("event", "The event name."),
                    query_param(
                        "once",
                        "true: refuse the event (409) if one of the same name was already raised with once=true to the instance's current execution. Of concurrent requests, exactly one is accepted.",
                        json!({ "type": "boolean" })
                    )
                ],
                "requestBody": any_json_body("The event data, any JSON value (empty means null)."),
                "responses": {
                    "202": { "description": "Accepted: the instance receives the event on its next turn." },
                    "400": error_response("Malformed JSON, invalid instance id or invalid once."),
                    "404": error_response("No such instance."),
                    "409": error_response("The instance is terminal, or (once=true) the event was already raised."),
                    "413": error_response("The body is larger than the limit.")
                }
            }
        },
        "/api/instances/{id}/terminate": control("Terminate an instance", "terminateInstance", "The instance is already terminal."),
        "/api/instances/{id}/suspend": control("Suspend an instance", "suspendInstance", "The instance is terminal."),
        "/api/instances/{id}/resume": control("Resume a suspended instance", "resumeInstance", "The instance is terminal."),
        "/api/instances/{id}/events": {
            "get": {
                "summary": "Read a page of stream events after a cursor",
                "operationId": "getEvents",
                "parameters": [
                    instance_id_param(),
                    query_param("after", "The cursor: the last sequence number already read (0 for the start).", cursor.clone()),
                    query_param("limit", "The most events to return.", json!({ "type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_EVENTS_LIMIT }))
                ],
                "responses": {
                    "200": json_response("The events after the cursor, in order.", "EventPage"),
                    "400": error_response("A bad cursor or limit, or an invalid instance id."),
                    "404": error_response("No such instance.")
                }
            }
        },
        "/api/instances/{id}/events/stream": {
            "get": {
                "summary": "Follow the stream live (Server-Sent Events)",
                "description": "Each stream event is one SSE event: `id:` the sequence number, `event:` the name, `data:` the payload as one line of JSON. Starts after the Last-Event-ID header, else after `after`, else at the start; sends keep-alive comments; ends after the last event of a terminal instance. If the store fails mid-way, a last event named `error` carries an Error body.",
                "operationId": "streamEvents",
                "parameters": [
                    instance_id_param(),
                    query_param("after", "The cursor (the Last-Event-ID header takes precedence).", cursor),
                    { "name": "Last-Event-ID", "in": "header", "required": false, "description": "The last sequence number received; sent by a reconnecting EventSource.", "schema": { "type": "integer", "minimum": 0 } }
                ],
                "responses": {
                    "200": { "description": "The event stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "204": { "description": "The instance is terminal and the cursor is at the end of its stream: nothing to send (an EventSource stops reconnecting)." },
                    "400": error_response("A bad cursor or invalid instance id."),
                    "404": error_response("No such instance.")
                }
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This OpenAPI description",
                "operationId": "openapi",
                "responses": { "200": { "description": "The OpenAPI 3 document.", "content": { "application/json": { "schema": { "type": "object" } } } } }
            }
        }
    })
}

/// The document: the core paths, then the paths added by extensions
/// (their methods are merged into a core path of the same template).
pub(crate) fn document(known: Option<&BTreeSet<String>>, token: bool, extra: &[(String, Value)]) -> Value {
    let mut paths = match paths(known) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (path, item) in extra {
        match (paths.get_mut(path), item) {
            (Some(Value::Object(existing)), Value::Object(added)) => {
                existing.extend(added.clone());
            }
            _ => {
                paths.insert(path.clone(), item.clone());
            }
        }
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "durable-core HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Start, read and control durable orchestration instances, and follow the append-only event stream of each instance as a page after a cursor or live as Server-Sent Events. Every error has the body {\"error\": {\"code\", \"message\"}}."
        },
        "paths": paths,
        "components": { "schemas": schemas() }
    });
    if token {
        doc["components"]["securitySchemes"] = json!({ "bearer": { "type": "http", "scheme": "bearer" } });
        doc["security"] = json!([{ "bearer": [] }]);
    }
    doc
}
