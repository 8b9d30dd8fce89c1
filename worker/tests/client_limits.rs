//! The supervisor-side client against a fake, hostile "worker" on a socketpair: a stall
//! mid-frame, a job that never ends and an endless token stream each end with a one-line
//! error naming the limit; a worker's error reason is escaped for a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use airlock_formats::bounded::ReplyLimits;
use airlock_formats::protocol::{
    encode_payload, write_frame, ErrorKind, GenerateRequest, Message, Response, Role,
};
use airlock_worker::client::generate_with;

const LIMITS: ReplyLimits = ReplyLimits {
    frame: Duration::from_millis(300),
    job: Duration::from_millis(900),
    job_bytes: 64 << 10,
};

fn request() -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message {
            role: Role::User,
            content: "hi".into(),
        }],
        max_tokens: 8,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    }
}

fn token() -> Vec<u8> {
    encode_payload(&Response::Token { text: "ab".into() }).unwrap()
}

/// What the fake worker does after it has read the request.
#[derive(Clone, Copy)]
enum Fake {
    StallMidFrame,
    OneTokenThenSilence,
    EndlessTokens,
    ErrorWithEscapes,
}

fn run(fake: Fake) -> String {
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        // Read the request frame (length + payload) first, like a worker.
        let mut len = [0u8; 4];
        theirs.read_exact(&mut len).unwrap();
        let mut req = vec![0u8; u32::from_le_bytes(len) as usize];
        theirs.read_exact(&mut req).unwrap();
        let _ = match fake {
            Fake::StallMidFrame => {
                let t = token();
                let mut f = (t.len() as u32).to_le_bytes().to_vec();
                f.extend_from_slice(&t[..t.len() / 2]);
                theirs.write_all(&f)
            }
            Fake::OneTokenThenSilence => {
                write_frame(&mut theirs, &token()).map_err(|_| std::io::Error::other("write"))
            }
            Fake::EndlessTokens => loop {
                if write_frame(&mut theirs, &token()).is_err() {
                    break Ok(());
                }
            },
            Fake::ErrorWithEscapes => {
                let e = Response::Error {
                    kind: ErrorKind::Inference,
                    reason: "bad\u{1b}[2J\u{202e}model".into(),
                };
                write_frame(&mut theirs, &encode_payload(&e).unwrap())
                    .map_err(|_| std::io::Error::other("write"))
            }
        };
        // Stay connected (a stalled worker) until the client gives up and closes.
        let _ = theirs.read(&mut [0u8; 1]);
    });
    let t0 = Instant::now();
    let r = generate_with(&mut ours, &request(), LIMITS);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(ours);
    peer.join().unwrap();
    match r {
        Ok((text, _)) => panic!("a hostile worker's answer was accepted: {text:?}"),
        Err(e) => {
            let s = e.to_string();
            assert_eq!(s.lines().count(), 1, "{s:?}");
            s
        }
    }
}

#[test]
fn hostile_worker_replies_end_with_the_limit_named() {
    for (fake, want) in [
        (
            Fake::StallMidFrame,
            "worker reply: a frame did not complete within the per-frame limit of 0.3s",
        ),
        (
            Fake::OneTokenThenSilence,
            "worker reply: the job did not complete within the per-job limit of 0.9s",
        ),
        (
            Fake::EndlessTokens,
            "worker reply: the answer exceeds the limit of 65536 bytes per job",
        ),
        (
            Fake::ErrorWithEscapes,
            "worker error (Inference): bad\\x1b[2J\\u{202e}model",
        ),
    ] {
        assert_eq!(run(fake), want);
    }
}
