//! Any bytes a client could send in a text frame, through the whole dispatch path:
//! `cargo +nightly fuzz run dispatch` (from the repository's root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A text frame is UTF-8 (tungstenite closes with 1007 otherwise).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(reply) = rohrpost::__private::dispatch_detached(text) {
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("replies are JSON");
        assert!(reply.is_object(), "replies are objects");
    }
});
