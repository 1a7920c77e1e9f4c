//! `RedisServer` itself: both flavours start and take writes; only the persistent one keeps
//! them across `kill9` + `restart`.

use testkit::RedisServer;

#[test]
fn starts_and_takes_xadd() {
    let redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    let id = redis.xadd("s", &[("op", "upsert"), ("n", "1")]);
    assert!(id.contains('-'), "{id}");
    assert_eq!(redis.cmd::<u64>(&["XLEN", "s"]), 1);
    let config: Vec<String> = redis.cmd(&["CONFIG", "GET", "appendonly"]);
    assert_eq!(config, ["appendonly", "yes"]);
}

#[test]
fn persistent_survives_kill9() {
    let mut redis = RedisServer::start();
    redis.xadd("s", &[("n", "1")]);
    redis.kill9();
    redis.restart();
    assert_eq!(redis.cmd::<u64>(&["XLEN", "s"]), 1);
}

#[test]
fn ephemeral_keeps_nothing() {
    let mut redis = RedisServer::start_ephemeral();
    let config: Vec<String> = redis.cmd(&["CONFIG", "GET", "appendonly"]);
    assert_eq!(config, ["appendonly", "no"]);
    redis.xadd("s", &[("n", "1")]);
    redis.kill9();
    redis.restart();
    assert_eq!(redis.cmd::<u64>(&["XLEN", "s"]), 0);
}

#[test]
fn pause_and_resume() {
    let redis = RedisServer::start();
    redis.pause();
    redis.resume();
    assert_eq!(redis.cmd::<String>(&["PING"]), "PONG");
}
