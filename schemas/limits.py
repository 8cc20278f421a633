"""Every size and count limit of Corral's protocol, in one place.

A consumer checks a body's size and JSON nesting before it parses it, so no
single message can exhaust a process. docs/protocol.md states these limits.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# Any message body, in either direction. Larger bodies are dead-lettered unread,
# and a Corral process never publishes one (RabbitMQ's own cap is 128 MiB).
MAX_MESSAGE_BYTES = 4 * MiB
# A job spec, as compact JSON (Kubernetes caps an object near 1.5 MiB).
MAX_SPEC_BYTES = 256 * KiB
# Nesting of JSON objects and arrays in a body; deeper bodies are refused unparsed.
MAX_JSON_DEPTH = 32
# A reply to a listing stops adding items once it reaches this many bytes.
PAGE_BYTES = 1 * MiB
# Items per page of a listing: the default, and the most a client may ask for.
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000
# What Corral keeps of a message it dead-letters itself (the rest is cut off).
DEAD_LETTER_BODY_BYTES = 64 * KiB

# Free text (reasons, errors, the sender): a receiver cuts longer text to this many
# characters instead of refusing the message, since it usually quotes a foreign error
# (Docker's) that its sender could not bound.
MAX_TEXT_LENGTH = 2000
MAX_SENDER_LENGTH = 256
# Ids. Job ids are job names (1-63 characters); task ids are `<job>-<token>-<slot>-<attempt>`.
MAX_TASK_ID_LENGTH = 100
MAX_ID_LENGTH = 128  # message ids, boot ids, container ids
MAX_CURSOR_LENGTH = 512
# The output of one logs.chunk (the worker sends at most 64 KiB).
MAX_LOG_CHUNK_CHARS = 256 * KiB
# Containers a heartbeat may list, and labels a node or a job may have.
MAX_NODE_TASKS = 10_000
# Nodes and jobs in one net.update message (a bigger view goes in several parts).
MAX_NET_NODES = 65_536
MAX_NET_JOBS = 20_000
MAX_LABELS = 64
MAX_LABEL_KEY_LENGTH = 128
MAX_LABEL_VALUE_LENGTH = 1024

# Job spec fields. Docker and the kernel take more, but MAX_SPEC_BYTES bounds the whole.
MAX_IMAGE_LENGTH = 512  # a reference: registry/repository[:tag][@digest]
MAX_IMAGE_NAME_LENGTH = 255  # registry/repository alone (Docker's own limit)
MAX_COMMAND_ARGS = 1024
MAX_ARG_LENGTH = 64 * KiB
MAX_ENV_VARS = 1024
MAX_ENV_KEY_LENGTH = 256
MAX_ENV_VALUE_LENGTH = 64 * KiB
MAX_CONSTRAINTS = 64
MAX_PORTS = 128
MAX_REPLICAS = 10_000
MAX_RETRIES = 1000
# CPUs per task: runc refuses less than 0.01 CPU, and Docker's NanoCpus of a smaller value
# can round to 0, which means no limit at all. Steps of 0.001 CPU (1m), as Kubernetes.
MIN_CPU = 0.01
CPU_STEP = 0.001
MAX_CPU = 1024.0
MAX_MEMORY = 1024**5  # 1 PiB: far above any machine, far below Docker's int64
# Restart backoff, seconds. The minimum keeps a crash loop from restarting hundreds of
# times a minute (a backoff of 1e-9 s gave 183 starts in 30 s).
MIN_BACKOFF = 0.5
MAX_BACKOFF = 3600.0
MAX_GRACE = 3600.0  # stop_grace and assign.stop's grace, seconds
MAX_HEARTBEAT_INTERVAL = 60.0  # the longest interval a leader asks or liveness honours, s
MAX_STANDBY_HOLD = 300.0  # assign.start's standby: how long a paused standby may wait, seconds
MAX_CHECK_SECONDS = 3600.0  # health check times and min_healthy, seconds
MAX_AGENT_GRACE = 7 * 86400.0  # a job's agent_grace, seconds
# Jobs in one api.submit_many request (Client.submit_many sends more as several).
MAX_BATCH_JOBS = 1000
# Replicas in one api.submit_many request, all its jobs together: as many as one job may
# have, so that a batch costs the master no more than the largest single submit.
MAX_BATCH_REPLICAS = 10_000
# Versions of a job's spec the master keeps (the current one and those before it).
MAX_VERSIONS_KEPT = 10
# Events the master keeps per job (corral inspect shows them), oldest dropped first.
MAX_JOB_EVENTS = 50
# The largest integer any field takes (a JSON number beyond int64 is not portable).
MAX_INT = 2**63 - 1
# A job file read by `corral submit` (YAML or JSON text).
MAX_JOB_FILE_BYTES = 1 * MiB
