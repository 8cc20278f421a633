"""The AsyncAPI 3.0 document of Corral's protocol (see schemas.contract).

Channels are the exchanges and queues of bus/topology.py, with their routing keys;
operations say who publishes and who consumes there; message payloads are the
envelope schemas of schemas.jsonschemas, referenced under components/schemas.
"""

from __future__ import annotations

from typing import Any

from bus import topology
from schemas.envelope import PAYLOAD_TYPES, PROTOCOL_VERSION
from schemas.jsonschemas import GENERATED, envelope_schema, summary
from schemas.messages import Payload

ASYNCAPI_REFS = "#/components/schemas/{model}"
AMQP = "0.3.0"  # the AsyncAPI AMQP bindings version


def _exchange(name: str) -> dict[str, Any]:
    (exchange,) = [e for e in topology.EXCHANGES if e.name == name]
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.kind,
                "durable": exchange.durable,
                "autoDelete": False,
                "vhost": "/",
            },
            "bindingVersion": AMQP,
        }
    }


def _queue(q: topology.Queue) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {
                "name": q.name,
                "durable": q.durable,
                "exclusive": q.exclusive,
                "autoDelete": q.auto_delete,
                "vhost": "/",
            },
            "bindingVersion": AMQP,
        }
    }


def _messages(*types: str) -> dict[str, Any]:
    return {t: {"$ref": f"#/components/messages/{t}"} for t in types}


NODE_ID = {"nodeId": {"description": "The worker's node id (NODE_ID_PATTERN)."}}
API_TYPES = tuple(t for t in sorted(PAYLOAD_TYPES) if t.startswith("api.") and t != "api.reply")


def _channels() -> dict[str, Any]:
    t = topology
    return {
        "heartbeat": {
            "address": "{nodeId}",
            "description": "Topic exchange; the routing key is the sender's node id (a worker "
            "user may publish only its own). The master reads it through a server-named "
            f"queue bound with `#`, whose messages expire after {t.HEARTBEAT_TTL_MS} ms.",
            "parameters": NODE_ID,
            "messages": _messages("heartbeat"),
            "bindings": _exchange(t.HEARTBEAT_EXCHANGE),
        },
        "api": {
            "address": "{role}.{type}",
            "description": f"Topic exchange `{t.API_EXCHANGE}`, bound to the quorum queue "
            f"`{t.API_QUEUE}` with `#`; only the active master consumes that. The routing key "
            "is the role the request is sent as, then its type: the broker lets each client "
            "user publish only under the roles it was given (docs/security.md).",
            "parameters": {
                "role": {"description": f"One of {', '.join(t.ROLES)}."},
                "type": {"description": "The message type, e.g. api.submit."},
            },
            "messages": _messages(*API_TYPES),
            "bindings": _exchange(t.API_EXCHANGE),
        },
        "apiReply": {
            "address": None,
            "description": "The request's `reply_to`, reached through the default exchange: "
            f"`{t.DIRECT_REPLY_TO}` (direct reply-to) or a server-named private queue "
            "(`amq.gen-...`). Any other reply_to gets no reply.",
            "messages": _messages("api.reply"),
        },
        "assign": {
            "address": "{nodeId}",
            "description": "Topic exchange (keys are node ids: a worker user may bind only its "
            f"own); each worker consumes its quorum queue `{t.node_queue_name('{nodeId}')}`, "
            "bound with its node id. Only the master user may publish here.",
            "parameters": NODE_ID,
            "messages": _messages("assign.start", "assign.stop"),
            "bindings": _exchange(t.ASSIGN_EXCHANGE),
        },
        **_status_channels(),
        "logsRequest": {
            "address": "{nodeId}",
            "description": "Topic exchange (keys are node ids); a connected worker consumes "
            "`corral.node.{nodeId}.rpc`. Only the master publishes here, forwarding a client's "
            "api.logs once it has checked the caller may read them (mandatory: a return means "
            "no such worker), and sending a worker a snapshot of the network view (net.update "
            "with `full`).",
            "parameters": NODE_ID,
            "messages": _messages("logs.request", "net.update"),
            "bindings": _exchange(t.RPC_EXCHANGE),
        },
        "logsReply": {
            "address": "{queue}",
            "description": f"Direct exchange `{t.REPLIES_EXCHANGE}`: the worker sends the "
            "chunks under the logs.request's `reply_to`, a client's server-named private queue "
            "bound here under its own name. (Workers may not write to the default exchange.)",
            "parameters": {"queue": {"description": "The client's private queue (amq.gen-...)."}},
            "messages": _messages("logs.chunk"),
            "bindings": _exchange(t.REPLIES_EXCHANGE),
        },
        "deadLetters": {
            "address": None,
            "description": f"Fanout exchange routed to the quorum queue `{t.DEAD_QUEUE}`, which "
            f"keeps at most {t.DEAD_LETTERS_MAX} letters and {t.DEAD_LETTERS_MAX_BYTES} bytes "
            f"for at most {t.DEAD_LETTER_TTL_MS} ms (the oldest go first).",
            "messages": _messages("deadLetter"),
            "bindings": _exchange(t.DEAD_LETTER_EXCHANGE),
        },
        "control": {
            "address": None,
            "description": "Fanout exchange: the active master announces its epoch here when "
            "it takes over and every few seconds; workers refuse commands of older epochs. It also "
            "sends the changes of the cluster network view here (net.update; a worker that "
            "missed one gets a snapshot on its logsRequest channel).",
            "messages": _messages("leader.announce", "net.update"),
            "bindings": _exchange(t.CONTROL_EXCHANGE),
        },
        "masters": {
            "address": None,
            "description": "Fanout exchange: every master's beat, every second (`corral "
            "masters`). Consumed by masters through private queues.",
            "messages": _messages("master.beat"),
            "bindings": _exchange(t.MASTERS_EXCHANGE),
        },
    }


def _status_channels() -> dict[str, Any]:
    status = _exchange(topology.STATUS_EXCHANGE)
    params = {
        "jobId": {"description": "The job id (its name)."},
        "taskId": {"description": "The task id, `<job>-<token>-<slot>-<attempt>`."},
        "nodeId": NODE_ID["nodeId"],
    }
    channels = {}
    for kind, address, message_type in (
        ("task", "task.{jobId}.{taskId}.{state}.{nodeId}", "task.status"),
        ("job", "job.{jobId}.{state}", "job.status"),
        ("node", "node.{nodeId}.{state}", "node.status"),
    ):
        used = {k: v for k, v in params.items() if "{" + k + "}" in address}
        used["state"] = {"description": f"The {kind}'s new state, as in the payload."}
        channels[f"{kind}Status"] = {
            "address": address,
            "description": f"Topic exchange `{topology.STATUS_EXCHANGE}`; subscribers bind "
            "their own queues with patterns such as `#`, `job.#`, `*.<job>.#`.",
            "parameters": used,
            "messages": _messages(message_type),
            "bindings": status,
        }
    channels["refusedCommands"] = {
        "address": "refused.{nodeId}",
        "description": "A worker dropped a command (most often a deposed master's, with an "
        "older epoch). Same topic exchange.",
        "parameters": {"nodeId": params["nodeId"]},
        "messages": _messages("command.refused"),
        "bindings": status,
    }
    channels["leaderStatus"] = {
        "address": "leader.{master}",
        "description": "A master took the lead (and repeats it every few seconds). Same topic "
        "exchange.",
        "parameters": {"master": {"description": "The master's name."}},
        "messages": _messages("leader.announce"),
        "bindings": status,
    }
    return channels


def _operation(
    action: str, channel: str, summary: str, *, mode: int | None = None, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
    }
    amqp: dict[str, Any] = {}
    if mode is not None:
        amqp["deliveryMode"] = mode
    if "mandatory" in extra:
        amqp["mandatory"] = extra.pop("mandatory")
    if "ack" in extra:
        amqp["ack"] = extra.pop("ack")
    if amqp:
        operation["bindings"] = {"amqp": {**amqp, "bindingVersion": AMQP}}
    operation.update(extra)
    return operation


def _reply(channel: str) -> dict[str, Any]:
    return {
        "address": {
            "location": "$message.header#/reply_to",
            "description": "The AMQP property reply_to of the request.",
        },
        "channel": {"$ref": f"#/channels/{channel}"},
    }


def _operations() -> dict[str, Any]:
    op = _operation
    return {
        "workerSendsHeartbeat": op(
            "send", "heartbeat", "Every interval, and on reconnect.", mode=1
        ),
        "masterReceivesHeartbeat": op("receive", "heartbeat", "Liveness and capacity.", ack=False),
        "clientSendsApiRequest": op(
            "send",
            "api",
            "A request; the answer goes to reply_to.",
            mode=2,
            reply=_reply("apiReply"),
        ),
        "masterReceivesApiRequest": op(
            "receive", "api", "One at a time, in order.", ack=True, reply=_reply("apiReply")
        ),
        "masterSendsAssignment": op(
            "send", "assign", "Start or stop a task on a node.", mode=2, mandatory=True
        ),
        "workerReceivesAssignment": op("receive", "assign", "From its node queue.", ack=True),
        "workerSendsTaskStatus": op("send", "taskStatus", "A container's new state.", mode=2),
        "masterReceivesTaskStatus": op(
            "receive", "taskStatus", "Through corral.master.status (task.#).", ack=True
        ),
        "masterSendsJobStatus": op("send", "jobStatus", "A job's new state.", mode=2),
        "masterSendsNodeStatus": op("send", "nodeStatus", "A node's new state.", mode=2),
        "subscriberReceivesTaskStatus": op("receive", "taskStatus", "Dashboards, corral watch."),
        "subscriberReceivesJobStatus": op("receive", "jobStatus", "Dashboards, Job.wait."),
        "subscriberReceivesNodeStatus": op("receive", "nodeStatus", "Dashboards."),
        "masterSendsLeaderAnnouncement": op(
            "send", "control", "On taking over, then every 5 s: the new epoch.", mode=2
        ),
        "workerReceivesLeaderAnnouncement": op(
            "receive", "control", "Raises the newest epoch the worker accepts.", ack=True
        ),
        "masterAnnouncesLeaderStatus": op(
            "send", "leaderStatus", "The same, for dashboards.", mode=2
        ),
        "masterSendsBeat": op(
            "send", "masters", "Every second: role, epoch, journal offset.", mode=1
        ),
        "masterReceivesBeat": op(
            "receive", "masters", "The table behind corral masters.", ack=True
        ),
        "workerSendsCommandRefused": op(
            "send", "refusedCommands", "A command it dropped (at most 20/s).", mode=1
        ),
        "subscriberReceivesCommandRefused": op(
            "receive", "refusedCommands", "Dashboards, corral watch."
        ),
        "clientSendsLogsRequest": op(
            "send",
            "logsRequest",
            "Stream a task's output.",
            mode=1,
            mandatory=True,
            reply=_reply("logsReply"),
        ),
        "workerReceivesLogsRequest": op("receive", "logsRequest", "Streams logs.chunk back."),
        "consumerSendsDeadLetter": op(
            "send", "deadLetters", "A message its consumer could not use.", mode=2
        ),
        "operatorReceivesDeadLetter": op("receive", "deadLetters", "Read corral.dead."),
    }


def _message(message_type: str, cls: type[Payload]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": message_type,
        "title": cls.__name__,
        "summary": summary(cls),
        "contentType": "application/json",
        "payload": {"$ref": ASYNCAPI_REFS.format(model=f"Envelope.{message_type}")},
        "bindings": {"amqp": {"messageType": message_type, "bindingVersion": AMQP}},
    }
    if message_type.startswith(("api.", "logs.")):
        message["correlationId"] = {
            "location": "$message.header#/correlation_id",
            "description": "The AMQP property correlation_id, copied onto replies.",
        }
    return message


def _dead_letter() -> dict[str, Any]:
    t = topology
    text = {"type": "string"}
    return {
        "name": "deadLetter",
        "title": "Dead letter",
        "summary": "A message a consumer refused, or the broker expired (x-death headers).",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "properties": {
                t.REASON_HEADER: {**text, "description": "Why (at most 2000 characters)."},
                t.SOURCE_QUEUE_HEADER: {**text, "description": "The queue it came from."},
                t.SOURCE_EXCHANGE_HEADER: {**text, "description": "Its original exchange."},
                t.SOURCE_KEY_HEADER: {**text, "description": "Its original routing key."},
                t.TRUNCATED_HEADER: {
                    "type": "integer",
                    "description": "The original body size, when only the first "
                    "DEAD_LETTER_BODY_BYTES were kept.",
                },
            },
        },
        "payload": {"description": "The original body (cut to DEAD_LETTER_BODY_BYTES)."},
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the protocol."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for message_type, cls in sorted(PAYLOAD_TYPES.items()):
        schema, defs = envelope_schema(cls, ASYNCAPI_REFS)
        for name, definition in defs.items():
            if schemas.setdefault(name, definition) != definition:
                raise AssertionError(f"two different models are named {name}")
        schemas[f"Envelope.{message_type}"] = schema
        messages[message_type] = _message(message_type, cls)
    messages["deadLetter"] = _dead_letter()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Corral",
            "version": str(PROTOCOL_VERSION),
            "description": f"{GENERATED} Corral's masters, workers and clients talk only over "
            "RabbitMQ (AMQP 0-9-1) with JSON messages in a versioned envelope. "
            "docs/protocol.md explains every channel, message, rule and limit.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "Any RabbitMQ broker; CORRAL_AMQP_URL names it.",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
