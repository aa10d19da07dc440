//! The transport's settings, from gRPC channel arguments (the names grpc's C++ server uses).
//!
//! HTTP/2 limits are set explicitly rather than left to library defaults, because they are
//! what bounds a hostile client (docs/operations.md lists them).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request message accepted (grpc.max_receive_message_length; gRPC's 4 MiB default).
    pub max_receive: usize,
    /// Largest answer message sent (grpc.max_send_message_length; unlimited by default).
    pub max_send: usize,
    /// SO_REUSEPORT on listening sockets (grpc.so_reuseport); off, so a port in use is an error.
    pub reuse_port: bool,
    /// Streams open at once per connection (grpc.max_concurrent_streams).
    pub max_concurrent_streams: u32,
    /// Size of a request's header block, decoded (grpc.max_metadata_size; gRPC's 8 KiB default).
    pub max_header_list_size: u32,
    /// Streams a client may reset before the server has seen them (rapid reset, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for a client's errors before it drops the connection.
    pub max_local_error_reset_streams: usize,
    /// PING an idle connection this often, and drop it if no answer within the timeout
    /// (grpc.keepalive_time_ms / grpc.keepalive_timeout_ms; gRPC's 2 h / 20 s).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A TLS handshake that takes longer is dropped (a client must not hold a slot for free).
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_receive: 4 * 1024 * 1024,
            max_send: usize::MAX,
            reuse_port: false,
            max_concurrent_streams: 256,
            max_header_list_size: 8 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keepalive_interval: Duration::from_secs(2 * 3600),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

fn message_limit(value: i64) -> usize {
    if value < 0 {
        usize::MAX
    } else {
        value as usize
    }
}

impl Limits {
    /// Settings from the integer channel arguments; arguments this transport has no use for
    /// are ignored, as gRPC ignores those it does not know.
    pub fn from_args(args: &[(String, i64)]) -> Result<Limits, String> {
        let mut limits = Limits::default();
        for (name, v) in args {
            let v = *v;
            let positive = || -> Result<u64, String> {
                u64::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or(format!("{name} must be positive, not {v}"))
            };
            match name.as_str() {
                "grpc.max_receive_message_length" => limits.max_receive = message_limit(v),
                "grpc.max_send_message_length" => limits.max_send = message_limit(v),
                "grpc.so_reuseport" => limits.reuse_port = v != 0,
                "grpc.max_concurrent_streams" => {
                    limits.max_concurrent_streams = u32::try_from(positive()?).unwrap_or(u32::MAX)
                }
                "grpc.max_metadata_size" => {
                    limits.max_header_list_size = u32::try_from(positive()?).unwrap_or(u32::MAX)
                }
                "grpc.keepalive_time_ms" => {
                    limits.keepalive_interval = Duration::from_millis(positive()?)
                }
                "grpc.keepalive_timeout_ms" => {
                    limits.keepalive_timeout = Duration::from_millis(positive()?)
                }
                _ => {}
            }
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_arguments_set_limits() {
        let args = vec![
            ("grpc.max_receive_message_length".to_string(), -1),
            ("grpc.max_send_message_length".to_string(), 64),
            ("grpc.max_concurrent_streams".to_string(), 10),
            ("grpc.unknown_to_us".to_string(), 1),
        ];
        let limits = Limits::from_args(&args).unwrap();
        assert_eq!(limits.max_receive, usize::MAX);
        assert_eq!(limits.max_send, 64);
        assert_eq!(limits.max_concurrent_streams, 10);
    }

    #[test]
    fn a_zero_stream_limit_is_refused() {
        let args = vec![("grpc.max_concurrent_streams".to_string(), 0)];
        assert!(Limits::from_args(&args).is_err());
    }
}
