//! The control socket against hostile or sloppy local clients (issue 13):
//! out-of-range numbers, half-closed connections, floods of connections,
//! descriptors and bytes, and a property test throwing random clients at
//! a daemon while `share status` must keep answering.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::common::TestDaemon;

/// Sends `request` (one line) on a fresh connection and reads every reply
/// line until the daemon closes.
fn raw(daemon: &TestDaemon, request: &str) -> Vec<Value> {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// A number no duration can hold is refused with a message, not a panic
/// of the worker (the connection used to close without a reply), and the
/// daemon carries on.
#[test]
fn out_of_range_retry_window_is_refused() {
    let daemon = TestDaemon::start("numbers");
    let replies = raw(
        &daemon,
        r#"{"v":1,"cmd":"send","peer":"127.0.0.1:9","entries":[{"path":"d","dir":true}],"retry_for_s":18446744073709551615}"#,
    );
    let last = replies.last().unwrap_or_else(|| {
        panic!(
            "no reply at all (did the worker panic?)\n{:?}",
            daemon.logged("panicked")
        )
    });
    assert_eq!(last["type"], "error", "{replies:?}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("retry_for_s"), "{message}");
    assert!(!daemon.logged("panicked"), "a worker panicked");
    let status = daemon.json(&["status"]);
    assert_eq!(status["name"], "numbers");
}
