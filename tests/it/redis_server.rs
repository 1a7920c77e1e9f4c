//! The private `redis-server` for these tests now lives in `testkit`, shared with the load tools.

pub use testkit::RedisServer;
