//! Config and credential changes are picked up without failing a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use agent_operator::api::llm_provider::ProviderType;

use crate::fake_provider::{Behaviour, FakeProvider};
use crate::harness::{Link, RouterProcess, chat_request, quick_settings};
use crate::net::closed_endpoint;

#[tokio::test]
async fn a_rotated_key_and_a_reordered_chain_apply_with_no_failed_request() {
    let first = FakeProvider::start(Behaviour::default()).await;
    let second = FakeProvider::start(Behaviour::default()).await;
    let a = Link::new("a", ProviderType::OpenAI, first.openai_endpoint());
    let b = Link::new("b", ProviderType::OpenAI, second.openai_endpoint());
    let router = Arc::new(RouterProcess::start(&[a.clone(), b.clone()], &quick_settings()).await);

    // Agents keep calling throughout; every call must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (router, stop, failures, calls) = (
            router.clone(),
            stop.clone(),
            failures.clone(),
            calls.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = router.chat(&chat_request(false)).await;
                calls.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }

    // Rotate a's key: the provider accepts only the new one once the file changed.
    let mut rotated = a.clone();
    rotated.key = Some("sk-a-rotated-0123456789".into());
    router.write_config(&[rotated.clone(), b.clone()], &quick_settings());
    wait_for(|| {
        first
            .chats()
            .last()
            .and_then(|r| r.headers.get("authorization").cloned())
            == Some("Bearer sk-a-rotated-0123456789".parse().expect("header"))
    })
    .await;
    first.set(|behaviour| behaviour.api_key = Some("sk-a-rotated-0123456789".into()));

    // Put b first, as the operator does when a stops being Ready.
    router.write_config(&[b, rotated], &quick_settings());
    let before = second.chats().len();
    wait_for(|| second.chats().len() > before + 10).await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    assert!(calls.load(Ordering::SeqCst) > 20, "the load ran throughout");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request failed during the changes"
    );
    assert!(
        router
            .metrics()
            .await
            .contains("agent_operator_router_config_reloads_total{result=\"changed\"} 2")
    );
}

/// Settings whose circuit opens after two failures and stays open for a minute: far longer
/// than any of these tests waits.
fn sticky_circuit() -> agent_operator::api::common::RouterSpec {
    agent_operator::api::common::RouterSpec {
        circuit_failure_threshold: 2,
        circuit_open_duration: Duration::from_secs(60).into(),
        ..quick_settings()
    }
}

/// Waits until a request through the router succeeds, at most 2 s (twenty reload intervals).
async fn answered_within_two_seconds(router: &RouterProcess) -> bool {
    for _ in 0..40 {
        if router.chat(&chat_request(false)).await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_rotated_key_closes_the_circuit_its_refused_predecessor_opened() {
    let fake = FakeProvider::start(Behaviour {
        api_key: Some("sk-a-rotated-0123456789".into()),
        ..Behaviour::default()
    })
    .await;
    let link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    let router = RouterProcess::start(std::slice::from_ref(&link), &sticky_circuit()).await;
    for _ in 0..2 {
        assert_ne!(
            router.chat(&chat_request(false)).await.0,
            200,
            "the old key is refused"
        );
    }
    let refused = fake.requests();
    assert_ne!(router.chat(&chat_request(false)).await.0, 200);
    assert_eq!(
        fake.requests(),
        refused,
        "the circuit is open: the provider is not asked"
    );

    let mut rotated = link;
    rotated.key = Some("sk-a-rotated-0123456789".into());
    router.write_config(&[rotated], &sticky_circuit());
    assert!(
        answered_within_two_seconds(&router).await,
        "the new key is used at once, not after the circuit's minute"
    );
}

#[tokio::test]
async fn a_new_endpoint_closes_the_circuit_the_old_one_opened() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("a", ProviderType::OpenAI, closed_endpoint());
    let router = RouterProcess::start(std::slice::from_ref(&link), &sticky_circuit()).await;
    for _ in 0..3 {
        assert_ne!(router.chat(&chat_request(false)).await.0, 200);
    }
    let mut moved = link;
    moved.endpoint = fake.openai_endpoint();
    router.write_config(&[moved], &sticky_circuit());
    assert!(
        answered_within_two_seconds(&router).await,
        "the new endpoint is tried at once"
    );
}

#[tokio::test]
async fn a_broken_config_file_keeps_the_last_good_one() {
    let fake = FakeProvider::start(Behaviour::default()).await;
    let link = Link::new("a", ProviderType::OpenAI, fake.openai_endpoint());
    let router = RouterProcess::start(&[link], &quick_settings()).await;
    router.break_config();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(router.chat(&chat_request(false)).await.0, 200);
    assert!(
        router
            .metrics()
            .await
            .contains("agent_operator_router_config_reloads_total{result=\"failed\"}")
    );
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}
