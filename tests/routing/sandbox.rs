//! The jq pool on its own: several requests in flight per worker process, and what happens to
//! the ones queued behind a program that loops or crashes.

use std::time::Duration;

use estafeta::sandbox::{DEPTH, Sandbox, SandboxError, SandboxSettings};
use serde_json::json;

fn pool(workers: usize, timeout_ms: u64) -> Sandbox {
    Sandbox::new(SandboxSettings {
        executable: env!("CARGO_BIN_EXE_estafeta").into(),
        workers,
        timeout: Duration::from_millis(timeout_ms),
        compile_timeout: Duration::from_secs(5),
        memory_mb: 512,
        max_output_bytes: 1 << 20,
    })
}

#[tokio::test]
async fn many_runs_in_flight_each_get_their_own_answer_in_order() {
    let sandbox = pool(2, 2_000);
    let runs = (0..DEPTH * 5).map(|i| {
        let sandbox = sandbox.clone();
        async move {
            // Bytes 0x00–0xFF in the input come back as they went.
            let text: String = (0..=255u8).map(char::from).collect();
            let out = sandbox
                .run(".n * 2 | tostring", json!({"n": i, "t": text}))
                .await;
            (i, out)
        }
    });
    for (i, out) in futures_util::future::join_all(runs).await {
        assert_eq!(out, Ok(json!((i * 2).to_string())), "run {i}");
    }
    let echoed = sandbox
        .run(
            ".t",
            json!({"t": (0..=255u8).map(char::from).collect::<String>()}),
        )
        .await;
    assert_eq!(
        echoed,
        Ok(json!((0..=255u8).map(char::from).collect::<String>()))
    );
}

#[tokio::test]
async fn runs_queued_behind_a_loop_or_a_crash_go_to_the_next_process() {
    // One worker, so everything queues behind the bad program in the same process.
    let sandbox = pool(1, 1_000);
    let bad = ["def f: f; f", "def f: 1 + f; f"];
    for program in bad {
        let first = {
            let sandbox = sandbox.clone();
            tokio::spawn(async move { sandbox.run(program, json!(0)).await })
        };
        // Let the bad program reach the worker first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let behind = (0..DEPTH * 2).map(|i| {
            let sandbox = sandbox.clone();
            async move { sandbox.run(". + 1", json!(i)).await }
        });
        let behind = futures_util::future::join_all(behind).await;
        for (i, out) in behind.into_iter().enumerate() {
            assert_eq!(out, Ok(json!(i + 1)), "{program}: run {i} behind it");
        }
        match first.await.unwrap() {
            Err(SandboxError::Timeout(1_000)) => assert_eq!(program, bad[0]),
            Err(SandboxError::Crashed(how)) => assert_eq!(program, bad[1], "{how}"),
            other => panic!("{program}: {other:?}"),
        }
    }
    // A refusal by the program is an answer, not a lost process.
    assert!(matches!(
        sandbox.run("error(\"no\")", json!(1)).await,
        Err(SandboxError::Failed(m)) if m.contains("no")
    ));
    assert!(matches!(
        sandbox.check("this is not jq").await,
        Err(SandboxError::Invalid(_))
    ));
    assert_eq!(sandbox.run(".", json!([1])).await, Ok(json!([1])));
    // `null` is an input like any other (a status URL may be pushed one).
    assert_eq!(sandbox.run(". == null", json!(null)).await, Ok(json!(true)));
}
