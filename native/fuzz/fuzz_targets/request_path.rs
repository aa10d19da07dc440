//! Arbitrary bytes as one HTTP/2 connection to the gRPC transport: frames, HPACK, gRPC
//! framing, timeouts and limits must never panic or hang, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::serve_bytes(data);
});
