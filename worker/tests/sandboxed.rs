//! The worker through the sandbox's spawn path (namespaces, pivot_root,
//! Landlock, both seccomp stages): generation, same tokens in and out of the
//! sandbox, crash and memory-bound handling. Needs root (CI runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_formats::protocol::{
    send, ErrorKind, GenerateRequest, Message, Request, Response, Role,
};
use airlock_sandbox::{ExitStatus, Limits};
use airlock_worker::client::{
    count, generate, receive, spawn_local, spawn_sandboxed, wait_ready, ClientError,
    SandboxedWorker,
};
use airlock_worker::modelgen::{write_model, Preset, Quant};

const WORKER: &str = env!("CARGO_BIN_EXE_airlock-worker");

fn model_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    let mut f = std::fs::File::create(&p).unwrap();
    write_model(&mut f, "tiny", Preset::Tiny.shape(), Quant::Q8_0, 1).unwrap();
    (dir, p)
}

fn request(seed: u64) -> GenerateRequest {
    GenerateRequest {
        messages: vec![
            Message {
                role: Role::System,
                content: "Answer briefly.".into(),
            },
            Message {
                role: Role::User,
                content: "What does the attached document say about audits?".into(),
            },
        ],
        max_tokens: 16,
        temperature: 0.8,
        top_p: 0.9,
        seed,
        stop: vec![],
    }
}

fn threads() -> Vec<String> {
    vec!["--threads".into(), "1".into()]
}

fn wait(w: &mut SandboxedWorker) -> ExitStatus {
    match w.process.wait_timeout(Duration::from_secs(60)).unwrap() {
        Some(st) => st,
        None => panic!("sandboxed worker did not exit within 60 s"),
    }
}

#[test]
fn sandboxed_worker_generates_the_same_tokens_as_unsandboxed() {
    let (_d, model) = model_dir();
    let mut sb = spawn_sandboxed(Path::new(WORKER), &model, &threads(), Limits::default()).unwrap();
    wait_ready(&mut sb.conn).unwrap();
    let (inside, stats) = generate(&mut sb.conn, &request(11)).unwrap();
    assert!(
        stats.decode_tokens > 0 && stats.prompt_tokens > 0,
        "{stats:?}"
    );
    let (greedy_inside, _) = generate(&mut sb.conn, &{
        let mut r = request(0);
        r.temperature = 0.0;
        r
    })
    .unwrap();
    // Tokenizing runs under stage 2 too (a missing call would end the worker with SIGSYS).
    let counted_inside = count(&mut sb.conn, "What does the document say?").unwrap();
    assert!(counted_inside > 0);
    send(&mut sb.conn, &Request::Shutdown).unwrap();
    assert_eq!(wait(&mut sb), ExitStatus::Exited(0));

    let mut args = vec!["--model".to_string(), model.display().to_string()];
    args.extend(threads());
    let mut local = spawn_local(Path::new(WORKER), &args, None).unwrap();
    wait_ready(&mut local.conn).unwrap();
    let (outside, _) = generate(&mut local.conn, &request(11)).unwrap();
    let (greedy_outside, _) = generate(&mut local.conn, &{
        let mut r = request(0);
        r.temperature = 0.0;
        r
    })
    .unwrap();
    let counted_outside = count(&mut local.conn, "What does the document say?").unwrap();
    drop(local.conn);
    assert!(local.child.wait().unwrap().success());

    assert!(!inside.is_empty());
    assert_eq!(inside, outside, "seeded sampling differs in the sandbox");
    assert_eq!(greedy_inside, greedy_outside);
    assert_eq!(counted_inside, counted_outside);
}

#[test]
fn crash_inside_the_sandbox_is_an_exit_status_not_a_hang() {
    let (_d, model) = model_dir();
    let mut sb = spawn_sandboxed(Path::new(WORKER), &model, &threads(), Limits::default()).unwrap();
    wait_ready(&mut sb.conn).unwrap();
    let mut r = request(1);
    r.max_tokens = 2000;
    send(&mut sb.conn, &Request::Generate(r)).unwrap();
    assert!(matches!(
        receive(&mut sb.conn).unwrap(),
        Response::Token { .. }
    ));
    sb.process.kill().unwrap();
    assert_eq!(wait(&mut sb), ExitStatus::Signaled(libc::SIGKILL));
    loop {
        match receive(&mut sb.conn) {
            Ok(Response::Token { .. }) => continue,
            Err(ClientError::Closed) | Err(ClientError::Receive(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn model_larger_than_the_sandbox_memory_bound_fails_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.gguf");
    let f = std::fs::File::create(&p).unwrap();
    (&f).write_all(b"GGUF").unwrap();
    f.set_len(3 << 30).unwrap(); // sparse
    let limits = Limits {
        address_space: Some(2 << 30),
        ..Limits::default()
    };
    let mut sb = spawn_sandboxed(Path::new(WORKER), &p, &threads(), limits).unwrap();
    match wait_ready(&mut sb.conn) {
        Err(ClientError::Worker {
            kind: ErrorKind::ModelLoad,
            reason,
        }) => assert_eq!(
            reason,
            "model /model/big.gguf: file is 3221225472 bytes, larger than the worker's memory limit of 2147483648 bytes"
        ),
        other => panic!("expected a model-load refusal, got {other:?}"),
    }
    assert_eq!(wait(&mut sb), ExitStatus::Exited(2));
}

#[test]
fn missing_model_is_refused_before_spawning() {
    let d = tempfile::tempdir().unwrap();
    let ghost = d.path().join("ghost.gguf");
    match spawn_sandboxed(Path::new(WORKER), &ghost, &threads(), Limits::default()) {
        Err(e) => assert!(
            e.to_string()
                .ends_with("ghost.gguf: No such file or directory (os error 2)"),
            "{e}"
        ),
        Ok(_) => panic!("a missing model was spawned"),
    }
}

/// A worker started without `--sandboxed` would serve under stage 1 alone (execve, fork and
/// executable memory allowed): the spawn path sees no stage-2 filters in
/// `/proc/<pid>/status` and refuses it, before any request can be sent.
#[test]
fn worker_without_the_sandboxed_flag_is_refused_with_reason() {
    let (_d, model) = model_dir();
    let (mut spec, _conn) = airlock_worker::client::sandboxed_spec(
        Path::new(WORKER),
        &model,
        &threads(),
        Limits::default(),
    )
    .unwrap();
    assert!(spec.args.iter().any(|a| a == "--sandboxed"));
    spec.args.retain(|a| a != "--sandboxed");
    let filters = airlock_sandbox::seccomp::stage2_filter_count();
    spec.stage2 = airlock_sandbox::Stage2::Required {
        filters,
        within: Duration::from_secs(3),
    };
    let stage1 = airlock_sandbox::seccomp::stage1_programs().unwrap().len();
    match airlock_sandbox::spawn(spec) {
        Err(e) => assert_eq!(
            e.to_string(),
            format!(
                "spawn: refused: the program did not install its stage-2 seccomp filters \
                 within 3000ms (Seccomp_filters {stage1}, want {})",
                stage1 + filters
            )
        ),
        Ok(_) => panic!("a worker without its stage 2 was handed over"),
    }
}
