//! The queue run of the scale benchmark: many tasks on one agent with `maxConcurrentTasks`,
//! created at once, drained as slots free. It measures the time from a slot freeing (a task
//! seen finished) to the next Job seen created, and what each admitted task costs the operator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_operator::api::AgentTask;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use super::{
    Args, Readings, condition_true, create_all, delete_namespace, fresh_namespace, task_object,
};

pub const SLOTS: i32 = 10;

/// A slot free longer than this before its next Job is listed on its own in the report.
const SLOW_SLOT: f64 = 1.0;

pub struct QueueRun {
    pub tasks: usize,
    pub drain_seconds: f64,
    /// Seconds from each slot freeing to the Job that took it, sorted.
    pub slot_to_job: Vec<f64>,
    /// The slots that waited longer than `SLOW_SLOT`: when each freed (seconds after the first
    /// create) and how long it waited, in the order they freed. A quantile cannot say whether
    /// a long wait is one slot or many, nor when in the run it happened.
    pub slow_slots: Vec<(f64, f64)>,
    pub most_in_flight: usize,
    pub readings: Readings,
}

/// When the bench's own watches first saw each task finished and each Job created.
#[derive(Default)]
struct Seen {
    finished: HashMap<String, Instant>,
    jobs: HashMap<String, Instant>,
}

pub async fn queue_run(
    client: &Client,
    args: &Args,
    fake: &super::fake_provider::FakeProvider,
) -> QueueRun {
    let n = args.queue;
    eprintln!("== {n} AgentTasks queued on one agent with maxConcurrentTasks {SLOTS}");
    let ns = fresh_namespace(client, &format!("bench-queue-{n}")).await;
    let operator = super::task_operator(client, args, fake, &ns, Some(SLOTS)).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watching = tokio::spawn(watch(client.clone(), ns.clone(), seen.clone()));
    let before = operator.requests().await;
    let started = Instant::now();
    create_all(
        client,
        &ns,
        (0..n).map(task_object).collect(),
        serde_json::from_value::<AgentTask>,
    )
    .await;
    eprintln!("   created in {:.1}s", started.elapsed().as_secs_f64());
    loop {
        let finished = seen.lock().expect("seen").finished.len();
        if finished >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "gave up: {finished} of {n} finished"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drain_seconds = started.elapsed().as_secs_f64();
    watching.abort();
    let readings = operator.readings().await;
    let mut readings = readings;
    readings.requests = super::subtract(&readings.requests, &before);
    let mut operator = operator;
    operator.stop();
    delete_namespace(client, &ns).await;

    let seen = seen.lock().expect("seen");
    let (slots, most_in_flight) = slot_latencies(&seen);
    let slow_slots = slots
        .iter()
        .filter(|(_, wait)| *wait > SLOW_SLOT)
        .map(|(freed, wait)| (signed_seconds(*freed, started), *wait))
        .collect();
    let mut slot_to_job: Vec<f64> = slots.iter().map(|(_, wait)| *wait).collect();
    slot_to_job.sort_by(f64::total_cmp);
    QueueRun {
        tasks: n,
        drain_seconds,
        slot_to_job,
        slow_slots,
        most_in_flight,
        readings,
    }
}

async fn watch(client: Client, ns: String, seen: Arc<Mutex<Seen>>) {
    let tasks = watcher::watcher(
        Api::<AgentTask>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .for_each(|event| {
        if let Ok(Event::Apply(task) | Event::InitApply(task)) = event
            && condition_true(task.status.as_ref().map(|s| &s.conditions[..]), "Complete")
        {
            seen.lock()
                .expect("seen")
                .finished
                .entry(task.name_any())
                .or_insert_with(Instant::now);
        }
        std::future::ready(())
    });
    let jobs = watcher::watcher(
        Api::<Job>::namespaced(client, &ns),
        watcher::Config::default(),
    )
    .for_each(|event| {
        if let Ok(Event::Apply(job) | Event::InitApply(job)) = event {
            seen.lock()
                .expect("seen")
                .jobs
                .entry(job.name_any())
                .or_insert_with(Instant::now);
        }
        std::future::ready(())
    });
    futures::future::join(tasks, jobs).await;
}

/// Pairs the k-th slot to free with the (k + SLOTS)-th Job: with every slot taken, that Job
/// could only start once that slot was free. Each slot as when it freed and how long it
/// waited, in the order slots freed; also the most Jobs in flight at once (started, task not
/// yet finished), which the limit bounds.
fn slot_latencies(seen: &Seen) -> (Vec<(Instant, f64)>, usize) {
    let mut frees: Vec<Instant> = seen.finished.values().copied().collect();
    let mut starts: Vec<Instant> = seen.jobs.values().copied().collect();
    frees.sort();
    starts.sort();
    let slots = SLOTS as usize;
    let latencies = frees
        .iter()
        .zip(starts.iter().skip(slots))
        .map(|(free, start)| (*free, signed_seconds(*start, *free)))
        .collect();
    let mut events: Vec<(Instant, i32)> = starts
        .iter()
        .map(|t| (*t, 1))
        .chain(frees.iter().map(|t| (*t, -1)))
        .collect();
    // A finish seen at the same instant as a start counts first.
    events.sort_by_key(|(t, delta)| (*t, *delta));
    let (mut in_flight, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        in_flight += delta;
        most = most.max(in_flight);
    }
    (latencies, usize::try_from(most).unwrap_or(0))
}

fn signed_seconds(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        (later - earlier).as_secs_f64()
    } else {
        -(earlier - later).as_secs_f64()
    }
}

pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn markdown(args: &Args, run: &QueueRun) -> String {
    let writes: Vec<String> = run
        .readings
        .requests
        .iter()
        .filter(|(key, _)| super::is_write(key))
        .map(|(key, count)| format!("`{key}` {count:.0} ({:.2})", count / run.tasks as f64))
        .collect();
    let latency =
        run.readings
            .latency
            .get("agenttask")
            .copied()
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
    let q = |p| quantile(&run.slot_to_job, p) * 1000.0;
    format!(
        "### A queue of {n} tasks on one agent\n\n\
        Generated by `e2e/bench/run` (`--queue {n}`; `--queue 0` skips it). {n} AgentTasks on one agent with `maxConcurrentTasks: {SLOTS}`, created at once at {qps} QPS; each runs to Succeeded (kwok completes its pod). Slot free → Job: from the bench's watch seeing the k-th task finished to its watch seeing the (k + {SLOTS})-th Job created, over the {pairs} slots that freed while tasks waited.\n\n\
        | measure | value |\n|---|---|\n\
        | drain, first create to last Succeeded | {drain:.1} s ({rate:.2} tasks/s) |\n\
        | most Jobs in flight at once | {most} (limit {SLOTS}) |\n\
        | slot free → next Job, p50 / p99 / max | {p50:.0} / {p99:.0} / {max:.0} ms |\n\
        | slots free over {SLOW_SLOT:.0} s (freed at, after the first create: waited) | {slow} |\n\
        | `agenttask` reconcile, p50 / p99 ≤ | {l50} s / {l99} s |\n\
        | operator CPU per task | {cpu:.1} ms ({cpu_total:.1} s) |\n\
        | operator peak RSS | {rss:.1} MiB |\n\
        | writes (per task) | {writes} |\n",
        n = run.tasks,
        qps = args.qps,
        pairs = run.slot_to_job.len(),
        drain = run.drain_seconds,
        rate = run.tasks as f64 / run.drain_seconds,
        most = run.most_in_flight,
        p50 = q(0.5),
        p99 = q(0.99),
        max = q(1.0),
        slow = slow_slots(&run.slow_slots),
        l50 = latency.0,
        l99 = latency.2,
        cpu = run.readings.cpu_seconds * 1000.0 / run.tasks as f64,
        cpu_total = run.readings.cpu_seconds,
        rss = run.readings.peak_rss_mib,
        writes = writes.join(", "),
    )
}

/// The slow slots for the report: all of them when few, else the count and the ten longest.
fn slow_slots(slots: &[(f64, f64)]) -> String {
    const LISTED: usize = 10;
    let show = |(freed, wait): &(f64, f64)| format!("{freed:.0} s: {wait:.1} s");
    if slots.len() <= LISTED {
        let listed: Vec<String> = slots.iter().map(show).collect();
        return if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        };
    }
    let mut longest = slots.to_vec();
    longest.sort_by(|a, b| b.1.total_cmp(&a.1));
    longest.truncate(LISTED);
    longest.sort_by(|a, b| a.0.total_cmp(&b.0));
    let listed: Vec<String> = longest.iter().map(show).collect();
    format!(
        "{} slots, between {:.0} s and {:.0} s; the {LISTED} longest: {}",
        slots.len(),
        slots.first().map_or(0.0, |s| s.0),
        slots.last().map_or(0.0, |s| s.0),
        listed.join(", ")
    )
}
