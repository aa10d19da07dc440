//! Arbitrary bytes as one HTTP/1.1 connection to the REST server: hyper's parsing, the body
//! limit, timeouts and the hand-off to the dispatcher must never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::serve_rest_bytes(data);
});
