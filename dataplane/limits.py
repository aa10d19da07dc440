"""How much work one request may ask for, checked before anything is allocated for it.

A tensor's shape is a promise the server keeps by allocating: a 42-byte Predict declaring shape
[268435456] with one `float_val` (a value to broadcast) asks for 1 GiB of float32, then the
model's 1 GiB answer and its encoding. TensorFlow Serving has no bound there. Here every
request's tensors are counted from their declared shapes (gRPC) or their JSON structure (REST)
and refused with INVALID_ARGUMENT past `--max_request_elements`, whatever the encoding; the
front ends call `check_request` from their decoders, the core calls the rest. One object shared
by both protocols, so the same request gets the same answer on either.

Why 16M (2**24) elements by default: one such tensor is 64 MiB of float32 (128 MiB of float64),
about what a REST body under the 32 MiB default can carry as JSON; decoding, running and
encoding it holds a few copies at once, so a request at the limit peaks at some hundreds of MB,
which a server with a few GB survives even with several at once. Real requests sit well below
it (a batch of 32 RGB images of 224x224 is 4.8M elements). Operators with larger tensors raise
it; 0 turns a bound off (TF Serving's behaviour).

The model's answer is bounded the same way (`--max_response_elements`): a model can multiply
its input (tf.tile, a decoder), and encoding a huge output costs more memory than computing it
(typed proto fields and JSON both hold a Python object per element on the way). Past the bound
the answer is RESOURCE_EXHAUSTED and nothing is encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dataplane.errors import Code, ServingError, invalid_argument

DEFAULT_MAX_ELEMENTS = 1 << 24
# Serialized tf.Examples are strings: their bytes count against the element bound at this
# rate (an element is at most 8 bytes for every numeric dtype), so a context merged into each
# of many examples cannot expand a small request into gigabytes.
BYTES_PER_ELEMENT = 8


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The per-request bounds; 0 disables one."""

    max_request_elements: int = DEFAULT_MAX_ELEMENTS
    max_response_elements: int = DEFAULT_MAX_ELEMENTS

    def check_request(self, elements: int) -> None:
        """Refuse a request whose tensors declare more than `max_request_elements` values."""
        limit = self.max_request_elements
        if limit and elements > limit:
            raise invalid_argument(
                f"Request tensors have {elements} elements in total, more than the limit of "
                f"{limit} (--max_request_elements)"
            )

    def check_serialized(self, size: int) -> None:
        """Refuse string inputs the server would have to build of more than the element bound
        in bytes (`BYTES_PER_ELEMENT` per element)."""
        limit = self.max_request_elements * BYTES_PER_ELEMENT
        if limit and size > limit:
            raise invalid_argument(
                f"Request input expands to {size} bytes, more than the limit of {limit} "
                f"({BYTES_PER_ELEMENT} per --max_request_elements)"
            )

    def check_response(self, outputs: Mapping[str, np.ndarray], requests: int = 1) -> None:
        """Refuse to encode outputs beyond `max_response_elements` (per request merged in)."""
        limit = self.max_response_elements * requests
        elements = sum(int(np.size(array)) for array in outputs.values())
        if limit and elements > limit:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"Response tensors have {elements} elements in total, more than the limit of "
                f"{limit} (--max_response_elements)",
            )


DEFAULT_LIMITS = RequestLimits()
