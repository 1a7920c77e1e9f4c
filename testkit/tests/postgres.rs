//! `PgServer` itself: it starts, runs SQL, and keeps committed rows across a crash
//! (`kill9` + `restart`) and a clean `stop` + `restart`.

use std::time::Instant;

use testkit::PgServer;

#[test]
fn starts_and_runs_sql() {
    let t = Instant::now();
    let pg = PgServer::start();
    eprintln!("start: {:?}", t.elapsed());
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/eligd", pg.port())
    );
    pg.execute(
        "CREATE TABLE members (id bigint PRIMARY KEY, name text);
         INSERT INTO members VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    );
    assert_eq!(pg.query_i64("SELECT count(*) FROM members"), 3);
    assert_eq!(pg.query_i64("SELECT max(id) FROM members"), 3);
    assert_eq!(pg.query_i64("SELECT 7"), 7);
    assert_eq!(pg.query_i64("SHOW max_connections"), 50);
    assert_eq!(
        pg.query_i64(
            "SELECT count(*) FROM pg_settings WHERE name = 'wal_level' AND setting = 'logical'"
        ),
        1
    );
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let row = client.query_one("SELECT current_database()", &[]).unwrap();
    assert_eq!(row.get::<_, String>(0), "eligd");
}

#[test]
fn errors_carry_the_server_message() {
    let pg = PgServer::start();
    let panic = std::panic::catch_unwind(|| pg.execute("SELECT * FROM no_such_table"))
        .expect_err("a missing table is an error");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("relation \"no_such_table\" does not exist"),
        "{message}"
    );
}

#[test]
fn kill9_and_restart_keep_committed_rows() {
    let mut pg = PgServer::start();
    let port = pg.port();
    pg.execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000);");
    // A session holding an open transaction when the server dies: its rows must vanish.
    let mut open = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    open.batch_execute("BEGIN; INSERT INTO t VALUES (-1);")
        .unwrap();
    pg.kill9();
    assert!(postgres::Client::connect(&pg.url(), postgres::NoTls).is_err());
    let t = Instant::now();
    pg.restart();
    eprintln!("restart after kill9 (crash recovery): {:?}", t.elapsed());
    assert_eq!(pg.port(), port);
    assert_eq!(pg.query_i64("SELECT count(*) FROM t"), 1000);
    assert_eq!(pg.query_i64("SELECT count(*) FROM t WHERE n < 0"), 0);
    pg.execute("INSERT INTO t VALUES (1001)");
    assert_eq!(pg.query_i64("SELECT count(*) FROM t"), 1001);
}

#[test]
fn stop_and_restart() {
    let mut pg = PgServer::start();
    pg.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2);");
    let t = Instant::now();
    pg.stop();
    eprintln!("stop: {:?}", t.elapsed());
    assert!(postgres::Client::connect(&pg.url(), postgres::NoTls).is_err());
    pg.stop(); // stopping a stopped server is a no-op
    let t = Instant::now();
    pg.restart();
    eprintln!("restart after stop: {:?}", t.elapsed());
    assert_eq!(pg.query_i64("SELECT sum(n) FROM t"), 3);
}

#[test]
fn works_inside_an_async_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = PgServer::start();
        pg.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (5);");
        assert_eq!(pg.query_i64("SELECT n FROM t"), 5);
    });
}

#[test]
fn drop_leaves_nothing_behind() {
    let pg = PgServer::start();
    let port = pg.port();
    let url = pg.url();
    drop(pg);
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
    // The port is free again: nothing of the cluster listens on it.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
