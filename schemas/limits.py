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
