//! The registry's eviction order, descriptor budget, timeouts and grace.

use super::*;

fn limits(max: usize, budget: usize) -> Limits {
    Limits {
        max,
        budget,
        header_read_timeout: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(100),
        write_timeout: Duration::from_millis(80),
    }
}

fn registry(max: usize) -> Arc<Registry> {
    Registry::new(limits(max, max * 2), ConnectionMetrics::default())
}

fn asked(r: &Registered) -> u8 {
    r.conn.close.load(Ordering::Acquire)
}

const SOON: u8 = Close::Soon as u8;
const NOW: u8 = Close::Now as u8;

fn tick() {
    std::thread::sleep(Duration::from_millis(3));
}

/// Long enough for a new connection to be a stranger (no longer spared as fresh).
fn past_fresh() {
    std::thread::sleep(Duration::from_millis(FRESH_MS + 10));
}

#[test]
fn at_the_limit_strangers_go_first_then_half_heads_then_the_newest_never_a_keep_alive_client() {
    let r = registry(5);
    let busy = r.admit(false).unwrap();
    busy.conn.busy();
    let head = r.admit(false).unwrap();
    head.conn.set(READING_HEAD);
    let keep_alive = r.admit(false).unwrap();
    keep_alive.conn.busy();
    keep_alive.conn.idle();
    let stranger = r.admit(false).unwrap();
    past_fresh();
    let fresh = r.admit(false).unwrap();
    let first = r.admit(false).unwrap();
    assert_eq!(asked(&stranger), SOON, "the idle stranger went first");
    assert_eq!(
        (r.live(), r.open()),
        (5, 6),
        "the evicted one is held until dropped"
    );
    let second = r.admit(false).unwrap();
    assert_eq!(asked(&head), SOON, "then the half-head");
    let third = r.admit(false).unwrap();
    assert_eq!(
        asked(&second),
        SOON,
        "then the newest new connection not yet heard"
    );
    assert_eq!(
        asked(&fresh),
        0,
        "a new connection from before the burst stays"
    );
    for kept in [&busy, &keep_alive] {
        assert_eq!(asked(kept), 0, "a keep-alive client and a busy one stay");
    }
    let handshake = r.admit(true).unwrap();
    handshake.conn.spoke.store(true, Ordering::Relaxed);
    handshake.conn.set(HANDSHAKE);
    assert_eq!(asked(&third), SOON);
    assert_eq!(asked(&first), 0);
    assert_eq!(r.metrics.evicted.get(), 4);
    assert_eq!(r.metrics.refused.get(), 0);
    drop((stranger, head, fresh, first, second, third, handshake));
    // Only a keep-alive client and busy ones left: the keep-alive client, then the oldest busy.
    let (a, b, c) = (
        r.admit(false).unwrap(),
        r.admit(false).unwrap(),
        r.admit(false).unwrap(),
    );
    for x in [&a, &b, &c] {
        x.conn.busy();
    }
    let d = r.admit(false).unwrap();
    assert_eq!(asked(&keep_alive), SOON);
    d.conn.busy();
    let _e = r.admit(false).unwrap();
    assert_eq!(asked(&busy), SOON, "then the busy one, oldest first");
}

#[test]
fn a_handshake_that_never_said_a_byte_goes_with_the_idle_ones() {
    let r = registry(2);
    let hello = r.admit(true).unwrap();
    hello.conn.spoke.store(true, Ordering::Relaxed);
    hello.conn.set(HANDSHAKE);
    let silent = r.admit(true).unwrap();
    past_fresh();
    let _newer = r.admit(true).unwrap();
    assert_eq!(asked(&silent), SOON, "the silent one, though newer");
    assert_eq!(asked(&hello), 0, "a client whose hello arrived stays");
}

#[test]
fn while_everything_is_new_a_client_that_spoke_outlasts_a_silent_flood() {
    let r = registry(3);
    // The client connected first and sent its ClientHello; the flood came after, silent.
    let client = r.admit(true).unwrap();
    client.conn.spoke.store(true, Ordering::Relaxed);
    client.conn.set(HANDSHAKE);
    let flood: Vec<Registered> = (0..10).map(|_| r.admit(true).unwrap()).collect();
    assert_eq!(
        asked(&client),
        0,
        "the older client stays: the silent ones go first"
    );
    // The flood churns its own newest; the first of it goes once it is a stranger.
    assert!(flood[1..flood.len() - 1].iter().all(|f| asked(f) >= SOON));
    assert_eq!(asked(&flood[0]), 0);
}

#[test]
fn a_client_that_connected_before_a_burst_outlasts_it_before_its_hello_is_read() {
    let r = registry(3);
    // A health check connected; its ClientHello is not read yet (the accept loop is busy with
    // the burst that follows). It was evicted first as the oldest new connection, once in CI.
    let probe = r.admit(true).unwrap();
    tick();
    let burst: Vec<Registered> = (0..20).map(|_| r.admit(true).unwrap()).collect();
    assert_eq!(
        asked(&probe),
        0,
        "the connection from before the burst stays"
    );
    assert!(burst.iter().filter(|b| asked(b) >= SOON).count() >= 17);
}

#[test]
fn evictions_from_one_scan_still_take_the_longest_idle_first() {
    let r = registry(3);
    let a = r.admit(false).unwrap();
    tick();
    let b = r.admit(false).unwrap();
    tick();
    let c = r.admit(false).unwrap();
    past_fresh();
    // The first eviction scans: a, b, c are the candidates (strangers), oldest first.
    let d = r.admit(false).unwrap();
    assert_eq!(asked(&a), SOON, "a, the oldest, went first");
    // b is busy, then idle again: newer than c and d now, so c goes next, then d.
    b.conn.busy();
    tick();
    b.conn.idle();
    let e = r.admit(false).unwrap();
    assert_eq!(asked(&c), SOON, "c was idle the longest");
    assert_eq!(asked(&b), 0);
    past_fresh();
    let f = r.admit(false).unwrap();
    assert_eq!(asked(&d), SOON, "d, idle since before b");
    assert_eq!(asked(&b), 0);
    assert_eq!(r.metrics.evicted.get(), 3);
    drop((e, f));
}

#[test]
fn at_the_descriptor_budget_the_oldest_closing_connection_is_dropped_now() {
    let r = Registry::new(limits(2, 3), ConnectionMetrics::default());
    let a = r.admit(false).unwrap();
    tick();
    let b = r.admit(false).unwrap();
    past_fresh();
    let c = r.admit(false).unwrap();
    assert_eq!(asked(&a), SOON);
    assert_eq!(r.open(), 3, "a still holds its socket");
    let d = r.admit(false).unwrap();
    assert_eq!(asked(&b), SOON, "b evicted for d");
    assert_eq!(
        asked(&a),
        NOW,
        "a, closing the longest, dropped to stay in budget"
    );
    assert_eq!(r.metrics.closed_hard.get(), 1);
    r.descriptors_short();
    assert_eq!(
        asked(&b),
        NOW,
        "descriptors short: every closing one dropped"
    );
    // Room for a live one, but every socket of the budget is live or being dropped: refused.
    drop(d);
    assert!(r.admit(false).is_none());
    assert_eq!(r.metrics.refused.get(), 1);
    drop((a, b));
    assert!(r.admit(false).is_some());
    drop(c);
}

#[test]
fn the_sweeper_times_out_heads_handshakes_idle_and_stalled_writes_and_ends_the_grace() {
    let r = registry(10);
    let idle = r.admit(false).unwrap();
    let slow = r.admit(false).unwrap();
    slow.conn.set(READING_HEAD);
    let handshake = r.admit(true).unwrap();
    let busy = r.admit(false).unwrap();
    busy.conn.busy();
    let stalled = r.admit(false).unwrap();
    stalled.conn.busy();
    stalled.conn.note_write(&Poll::<()>::Pending);
    let writing = r.admit(false).unwrap();
    writing.conn.busy();
    writing.conn.note_write(&Poll::<()>::Pending);
    std::thread::sleep(Duration::from_millis(70));
    writing.conn.note_write(&Poll::Ready(()));
    r.sweep();
    assert_eq!((asked(&slow), asked(&handshake)), (NOW, NOW));
    assert_eq!(asked(&idle), 0, "not idle long enough");
    std::thread::sleep(Duration::from_millis(50));
    r.sweep();
    assert_eq!(asked(&idle), SOON, "idle: finish within the grace");
    assert_eq!(
        asked(&stalled),
        NOW,
        "a write waiting past the write timeout"
    );
    assert_eq!(asked(&writing), 0, "its write went through");
    assert_eq!(asked(&busy), 0, "a busy one is never timed out");
    assert_eq!(r.metrics.timed_out.get(), 4);
    assert_eq!((r.live(), r.open()), (2, 6));
    drop((slow, handshake, stalled));
    assert_eq!(r.open(), 3);
    // The grace over, the idle one is dropped.
    std::thread::sleep(CLOSE_GRACE + Duration::from_millis(20));
    r.sweep();
    assert_eq!(asked(&idle), NOW);
    drop((idle, busy, writing));
    assert_eq!(r.open(), 0);
}

#[tokio::test]
async fn closing_waits_for_a_firmer_ask() {
    let r = registry(4);
    let a = r.admit(false).unwrap();
    r.close_all();
    assert_eq!(a.conn.closing(None).await, Close::Graceful);
    let conn = Arc::clone(&a.conn);
    let firmer = tokio::spawn(async move { conn.closing(Some(Close::Graceful)).await });
    tokio::task::yield_now().await;
    assert!(!firmer.is_finished());
    r.lock().send_off(a.id, Close::Now);
    assert_eq!(firmer.await.unwrap(), Close::Now);
    assert_eq!(r.live(), 0);
}
