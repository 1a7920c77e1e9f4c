//! The command line (docs/operations.md, "Commands and flags"). Every flag also reads `ELIGD_<FLAG>` from the
//! environment, so container deployments configure the service without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::index::{FeedPosition, StreamEpoch};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "eligd",
    version,
    about = "Eligibility (booklet credit) inquiry service",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to standard error: `text` for people, `json` (one object per
    /// line: timestamp, level, target, message and fields) for a log pipeline, or `auto`: text
    /// on a terminal, JSON otherwise.
    #[arg(long, global = true, env = "ELIGD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

impl Cli {
    /// Parses the command line, running `serve` when no subcommand is named (`eligd` and
    /// `eligd --listen …` both serve). Only the named subcommand's flags and environment
    /// variables are read, so a stray `ELIGD_LISTEN` cannot break `eligd check-id`.
    pub fn parse_with_default() -> Cli {
        Cli::parse_from(with_default_subcommand(std::env::args_os().collect()))
    }
}

const TOP_LEVEL_FLAGS: [&str; 4] = ["-h", "--help", "-V", "--version"];

/// Inserts `serve` after the program name when the first argument is a flag (or absent).
pub fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let needs_default = match first.as_deref() {
        None => true,
        Some(a) => a.starts_with('-') && !TOP_LEVEL_FLAGS.contains(&a),
    };
    if needs_default {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Write a deterministic synthetic population as JSON Lines.
    DemoData(DemoDataArgs),
    /// Build or inspect snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Move committed changes from PostgreSQL's outbox to the change stream.
    Relay(RelayArgs),
    /// Validate a national ID (exit 0 valid, 1 invalid).
    CheckId(CheckIdArgs),
    /// Manage client API keys (the file of `serve --api-keys`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tools for the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored hashed.
    Add(KeysAddArgs),
    /// List keys without secrets.
    List(KeysFileArg),
    /// Revoke a key at once (send SIGHUP to running services to apply it).
    Revoke(KeysIdArgs),
    /// Issue a successor; the old key keeps working for --overlap seconds.
    Rotate(KeysRotateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeysFileArg {
    /// The keys file (written atomically, mode 0600).
    #[arg(long, env = "ELIGD_KEYS_FILE")]
    pub keys_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeysAddArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// Who holds the key (a metric label and an audit field: A-Z a-z 0-9 . _ -).
    #[arg(long, env = "ELIGD_CLIENT")]
    pub client: String,
    /// The channel the key may call: http, fhir, ussd, sms or any.
    #[arg(long, env = "ELIGD_CHANNEL")]
    pub channel: String,
    /// Inquiries per second (the token bucket's refill rate).
    #[arg(long, env = "ELIGD_RATE", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Inquiries at once (the bucket's size); default: the rate.
    #[arg(long, env = "ELIGD_BURST", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub burst: Option<u32>,
    /// Last day the key works (YYYY-MM-DD, through the end of that day in Tehran), or an
    /// RFC 3339 instant.
    #[arg(long, env = "ELIGD_EXPIRES")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeysIdArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// The key's id (the 8 characters after `eligd_`).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub file: KeysFileArg,
    /// The key's id (the 8 characters after `eligd_`).
    pub id: String,
    /// Seconds the old key keeps working after the rotation: 0 to 2592000 (30 days).
    #[arg(long, env = "ELIGD_OVERLAP", default_value_t = 86_400,
          value_parser = parse_overlap)]
    pub overlap: u64,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit subject (the HMAC under ELIGD_AUDIT_KEY, or the key in the file named
    /// by ELIGD_AUDIT_KEY_FILE) of a national ID, to find the lines about that person in the
    /// audit log.
    Subject(AuditSubjectArgs),
}

#[derive(Debug, Args)]
pub struct AuditSubjectArgs {
    /// The national ID, in any digit script.
    pub national_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// The records database, holding the schema of deploy/postgres/schema.sql: a URL
    /// (`postgres://user[:password]@host:port/db`) or libpq's `key=value` form (`host=… port=…
    /// user=… dbname=…`). Never echoed.
    #[arg(long, env = "ELIGD_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: String,
    /// A file holding the database password (a mounted Secret; one trailing newline is
    /// ignored), used instead of any password in `--postgres-url`; read again for every new
    /// connection.
    #[arg(long, env = "ELIGD_POSTGRES_PASSWORD_FILE")]
    pub postgres_password_file: Option<PathBuf>,
    /// The Redis holding the change stream (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS). With `--redis-sentinels` it supplies only TLS, credentials and
    /// database.
    #[arg(
        long,
        env = "ELIGD_REDIS_URL",
        hide_env_values = true,
        required_unless_present = "redis_sentinels"
    )]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The stream key.
    #[arg(long, env = "ELIGD_STREAM", default_value = "eligd:changes")]
    pub stream: String,
    /// The relay's own HTTP address for `/healthz`, `/readyz` and `/metrics` (loopback only).
    #[arg(long, env = "ELIGD_LISTEN", default_value = "127.0.0.1:9091")]
    pub listen: SocketAddr,
    /// Outbox rows moved per batch (written in scripts of at most 256 entries, so Redis is
    /// never held long).
    #[arg(long, env = "ELIGD_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// Look at the outbox this often even without a notification (milliseconds).
    #[arg(long, env = "ELIGD_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
    /// Keep stream entries this many hours (trimmed by ID age, `XTRIM MINID`); must exceed
    /// the age of the oldest snapshot any replica may load, and cover at least two of the
    /// replicas' `--compact-interval`. 0 never trims.
    #[arg(long, env = "ELIGD_RETAIN_HOURS", default_value_t = 48)]
    pub retain_hours: u64,
    /// The replicas' compaction interval in seconds (`serve --compact-interval`): the relay
    /// refuses a `--retain-hours` shorter than two of them.
    #[arg(long, env = "ELIGD_COMPACT_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_interval: u64,
    /// Redis replicas that must hold relayed entries (`WAIT`, about once a second on a
    /// connection of its own, never delaying a change) before their outbox rows count as
    /// replicated and may be deleted; 0 with a single Redis.
    #[arg(long, env = "ELIGD_WAIT_REPLICAS", default_value_t = 0)]
    pub wait_replicas: u64,
    /// How long `WAIT` waits for `--wait-replicas` (milliseconds); a shortfall is counted and
    /// the rows stay in the outbox until a later `WAIT` succeeds.
    #[arg(long, env = "ELIGD_WAIT_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub wait_timeout_ms: u64,
    /// Relayed rows stay in the outbox at least this many seconds (and until replicated), so
    /// a Redis that comes back from an older copy, or a failover to a replica that lacked
    /// them, gets them back with their stream IDs. Size it above Redis's persistence
    /// interval (RDB save period, AOF fsync).
    #[arg(long, env = "ELIGD_OUTBOX_KEEP_SECS", default_value_t = 3600)]
    pub outbox_keep_secs: u64,
}

/// How to reach Redis besides `--redis-url`: TLS trust, credentials, and Sentinel.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// PEM file of the CA that signed Redis's (and the sentinels') certificates, for
    /// `rediss://`; without it the system's roots.
    #[arg(long, env = "ELIGD_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// The Redis ACL user to authenticate as (`AUTH user password`), instead of a user in
    /// `--redis-url`; without either, Redis's `default` user.
    #[arg(long, env = "ELIGD_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// A file holding Redis's password (a mounted Secret; one trailing newline is ignored),
    /// used instead of a password in `--redis-url`; read again for every new connection.
    #[arg(long, env = "ELIGD_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// Find the Redis primary through these sentinels (`host:port,…`), with `--redis-master`.
    #[arg(long, env = "ELIGD_REDIS_SENTINELS", requires = "redis_master")]
    pub redis_sentinels: Option<String>,
    /// The master name the sentinels monitor.
    #[arg(long, env = "ELIGD_REDIS_MASTER", requires = "redis_sentinels")]
    pub redis_master: Option<String>,
    /// The sentinels' own password (`requirepass` in sentinel.conf); prefer
    /// `--redis-sentinel-password-file`.
    #[arg(
        long,
        env = "ELIGD_REDIS_SENTINEL_PASSWORD",
        hide_env_values = true,
        // A password may start with `-`: taken as the value, never echoed as an unknown flag.
        allow_hyphen_values = true,
        conflicts_with = "redis_sentinel_password_file"
    )]
    pub redis_sentinel_password: Option<String>,
    /// A file holding the sentinels' own password; read again for every new connection.
    #[arg(long, env = "ELIGD_REDIS_SENTINEL_PASSWORD_FILE")]
    pub redis_sentinel_password_file: Option<PathBuf>,
}

impl RedisArgs {
    /// Where Redis is and how to authenticate, from these flags and `--redis-url`. Password
    /// files are read here: a missing or empty one is an error naming the flag.
    pub fn target(&self, url: Option<&str>) -> anyhow::Result<crate::redis::RedisTarget> {
        use crate::secret::Secret;
        let password = Secret::from_flags(
            None,
            "--redis-password-file",
            self.redis_password_file.as_deref(),
        )?;
        let sentinel_password = Secret::from_flags(
            self.redis_sentinel_password.as_deref(),
            "--redis-sentinel-password-file",
            self.redis_sentinel_password_file.as_deref(),
        )?;
        Ok(crate::redis::RedisTarget::new(
            url,
            self.redis_sentinels.as_deref(),
            self.redis_master.as_deref(),
            self.redis_ca.as_deref(),
        )?
        .with_username(self.redis_username.as_deref())?
        .with_password(password)
        .checked()?
        .with_sentinel_password(sentinel_password)?)
    }

    /// Whether a feed is configured at all.
    pub fn configured(&self, url: Option<&str>) -> bool {
        url.is_some() || self.redis_sentinels.is_some()
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP address to listen on. Without --api-keys only a loopback address is allowed
    /// (nobody would be authenticated).
    #[arg(long, env = "ELIGD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A listener of its own for `/metrics`, `/status`, `/readyz` and `/healthz` (plain HTTP,
    /// any address: no personal data). With it, `--listen` serves only the API, FHIR, the
    /// gateways and the page (404 for the rest); without it, `--listen` serves everything.
    #[arg(long, env = "ELIGD_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// Load this snapshot at start instead of generating the demo population.
    #[arg(long, env = "ELIGD_SNAPSHOT")]
    pub snapshot: Option<PathBuf>,
    /// Where periodic snapshots are written atomically; the newest valid one is loaded at
    /// start when `--snapshot` is not given (and tried after it when it is refused).
    #[arg(long, env = "ELIGD_SNAPSHOT_DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Seconds between compactions (base + overlay written to a new snapshot) while the
    /// overlay holds changes. Needs `--snapshot-dir`.
    #[arg(long, env = "ELIGD_COMPACT_INTERVAL", default_value_t = 3600)]
    pub compact_interval: u64,
    /// Compact as soon as the overlay holds this many changes.
    #[arg(long, env = "ELIGD_COMPACT_OVERLAY", default_value_t = 500_000)]
    pub compact_overlay: usize,
    /// How many snapshots to keep in `--snapshot-dir` (older ones are deleted).
    #[arg(long, env = "ELIGD_SNAPSHOT_KEEP", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_keep: u64,
    /// When snapshots are configured but none is valid, serve the synthetic demo population
    /// instead of exiting.
    #[arg(long, env = "ELIGD_DEMO_FALLBACK")]
    pub demo_fallback: bool,
    /// With no snapshot: generate this many synthetic members in memory.
    #[arg(long, env = "ELIGD_DEMO_MEMBERS", default_value_t = 1_000_000)]
    pub demo_members: u64,
    /// Seed of the synthetic population.
    #[arg(long, env = "ELIGD_DEMO_SEED", default_value_t = 1)]
    pub demo_seed: u64,
    /// Makes tracking codes unique across replicas (0–99).
    #[arg(long, env = "ELIGD_NODE_ID", default_value_t = 0)]
    pub node_id: u64,
    /// Follow the change feed in this Redis (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS); without it (and without `--redis-sentinels`) the index is
    /// static. With `--redis-sentinels` it supplies only TLS, credentials and database.
    #[arg(long, env = "ELIGD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The stream key of the change feed.
    #[arg(long, env = "ELIGD_STREAM", default_value = "eligd:changes")]
    pub stream: String,
    /// Not ready when the index may be more than this many seconds behind the feed.
    #[arg(long, env = "ELIGD_MAX_STALENESS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_staleness: u64,
    /// USSD and SMS inquiries allowed per phone number per minute (also the burst); a phone
    /// over it gets a polite "try again in a minute" while other phones are answered.
    #[arg(long, env = "ELIGD_PHONE_REQUESTS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub phone_requests_per_minute: u32,
    /// Public endpoint (`POST /v1/public/credit`, the page's) inquiries allowed per client
    /// address per minute (also the burst).
    #[arg(long, env = "ELIGD_PUBLIC_REQUESTS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub public_requests_per_minute: u32,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names the
    /// client for the per-address limits; from anyone else the header is ignored.
    #[arg(long, env = "ELIGD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::client_address::TrustedProxies,
    /// IPv6 clients are limited (and their refusals audited) by this prefix length.
    #[arg(long, env = "ELIGD_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(16..=128))]
    pub ipv6_prefix: u8,
    /// The public endpoint's ceiling for all client addresses together, per second (burst
    /// twice that); 0: none. Bounds enumeration from many addresses.
    #[arg(long, env = "ELIGD_PUBLIC_REQUESTS_PER_SECOND", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub public_requests_per_second: u32,
    /// With --api-keys: requests without a valid key allowed per client address per minute
    /// (answered 401); past it they are answered 429. A refusal costs the refused.
    #[arg(long, env = "ELIGD_UNAUTHENTICATED_REQUESTS_PER_MINUTE", default_value_t = crate::app::DEFAULT_UNAUTHENTICATED_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub unauthenticated_requests_per_minute: u32,
    /// Serve neither the page for people (`/`, the app's files) nor `POST /v1/public/credit`.
    #[arg(long, env = "ELIGD_NO_PUBLIC_PAGE")]
    pub no_public_page: bool,
    /// Client keys file (`eligd keys add`): every inquiry route then needs a key, and any
    /// listen address is allowed. Re-read on SIGHUP.
    #[arg(long, env = "ELIGD_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Append one JSON line per inquiry to this file (needs ELIGD_AUDIT_KEY, hex, at least
    /// 16 bytes, or ELIGD_AUDIT_KEY_FILE naming a file that holds it). No record, no answer: inquiries are refused while it cannot be written.
    #[arg(long, env = "ELIGD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it would grow past this many bytes.
    #[arg(long, env = "ELIGD_AUDIT_MAX_BYTES", default_value_t = crate::audit::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub audit_max_bytes: u64,
    /// Remove the oldest rotated audit files while the log and its rotated files hold more
    /// than this many bytes (at least twice --audit-max-bytes).
    #[arg(long, env = "ELIGD_AUDIT_KEEP_BYTES", default_value_t = crate::audit::DEFAULT_KEEP_BYTES, value_parser = clap::value_parser!(u64).range(8192..))]
    pub audit_keep_bytes: u64,
    /// Sync the audit log to disk at least this often, in milliseconds (0: after every
    /// write). A power loss can lose what was written since the last sync.
    #[arg(long, env = "ELIGD_AUDIT_FSYNC_MS", default_value_t = crate::audit::DEFAULT_FSYNC_MS, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub audit_fsync_ms: u64,
    /// Create the audit log and its rotated files 0640 (readable by the group) instead of 0600.
    #[arg(long, env = "ELIGD_AUDIT_GROUP_READABLE")]
    pub audit_group_readable: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); both re-read on SIGHUP.
    #[arg(long, env = "ELIGD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "ELIGD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Open connections at most; at the limit the longest-idle one is closed to make room,
    /// and a new one is refused only when every one is busy.
    #[arg(long, env = "ELIGD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Seconds a client has to send a request's headers once it started sending them.
    #[arg(long, env = "ELIGD_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Seconds an idle connection (no request in flight, none started) is kept open.
    #[arg(long, env = "ELIGD_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Seconds a write may wait for a client to read before the connection is dropped (a
    /// client that never reads its answers).
    #[arg(long, env = "ELIGD_WRITE_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout: u64,
}

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// How many members to write.
    #[arg(long, env = "ELIGD_MEMBERS", default_value_t = 1_000_000)]
    pub members: u64,
    /// The same seed (and date) gives the same population.
    #[arg(long, env = "ELIGD_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Output file; `-` or absent writes to standard output.
    #[arg(long, env = "ELIGD_OUT")]
    pub out: Option<PathBuf>,
    /// The date coverage ends are drawn around (YYYY-MM-DD); default today in Tehran.
    #[arg(long, env = "ELIGD_TODAY")]
    pub today: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Build a snapshot file from JSON Lines.
    Build(SnapshotBuildArgs),
    /// Print a snapshot's header and counts, and verify its checksum and every member.
    Inspect(SnapshotInspectArgs),
    /// Print the change stream's newest entry ID and its epoch, as `--position ID --epoch
    /// HEX`: note them before an export starts, and build the export's snapshot with them.
    Position(SnapshotPositionArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotPositionArgs {
    /// The Redis of the change stream (required unless `--redis-sentinels`).
    #[arg(long, env = "ELIGD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The stream key.
    #[arg(long, env = "ELIGD_STREAM", default_value = "eligd:changes")]
    pub stream: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from_jsonl", "from_postgres"])))]
pub struct SnapshotBuildArgs {
    /// JSON Lines file of member records (`-` reads standard input).
    #[arg(long, env = "ELIGD_FROM_JSONL")]
    pub from_jsonl: Option<PathBuf>,
    /// Read the `members` table of this records database instead, in one consistent
    /// transaction (`postgres://user[:password]@host:port/db`, or libpq's `key=value` form).
    #[arg(long, env = "ELIGD_FROM_POSTGRES", hide_env_values = true)]
    pub from_postgres: Option<String>,
    /// With `--from-postgres`: a file holding the database password, used instead of any
    /// password in it (one trailing newline is ignored).
    #[arg(long, env = "ELIGD_POSTGRES_PASSWORD_FILE", requires = "from_postgres")]
    pub postgres_password_file: Option<PathBuf>,
    /// The Redis of the change stream. With `--from-postgres` it is read before the table,
    /// so the snapshot records a position from which no change is missed, and the stream's
    /// epoch; with `--from-jsonl`, `--position` and `--epoch`, a check that the stream is still
    /// of that epoch (a replica would refuse the snapshot otherwise).
    #[arg(long, env = "ELIGD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// With `--out` a directory: build nothing, and succeed, when it already holds a
    /// snapshot that verifies (a replica's first start seeds its volume; later starts map
    /// what is there).
    #[arg(long, env = "ELIGD_IF_MISSING")]
    pub if_missing: bool,
    /// With `--redis-url`: the stream key.
    #[arg(long, env = "ELIGD_STREAM", default_value = "eligd:changes")]
    pub stream: String,
    /// Where to write the snapshot (atomically, verified before it is named). An existing
    /// directory (a service's `--snapshot-dir`) receives it under the name its header gives
    /// it, which is the only name a snapshot directory accepts.
    #[arg(long, env = "ELIGD_OUT")]
    pub out: PathBuf,
    /// Fail on the first bad line instead of skipping it.
    #[arg(long, env = "ELIGD_STRICT")]
    pub strict: bool,
    /// With `--from-jsonl`: write a snapshot even when the input holds no member. Without it
    /// such a build fails: a replica loading an empty snapshot would be ready and answer
    /// `member_not_found` to everyone (an empty export, a pipe cut before its first line). An
    /// empty members table (`--from-postgres`) is the start of a deployment, and is built.
    #[arg(long, env = "ELIGD_ALLOW_EMPTY")]
    pub allow_empty: bool,
    /// Where the build sorts what does not fit its 128 MiB sort buffer: a private
    /// directory is made there and removed when the build ends. It needs free space of about
    /// 54 bytes per input line. Default: the directory the snapshot goes to.
    #[arg(long, env = "ELIGD_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// The change-feed position (stream entry ID `ms-seq`) the records reflect: a service
    /// loading the snapshot replays the stream from there. Without it, from the stream's
    /// first entry. Needs `--epoch`.
    #[arg(long, env = "ELIGD_POSITION", conflicts_with = "from_postgres")]
    pub position: Option<FeedPosition>,
    /// The stream epoch (32 hexadecimal digits) `--position` belongs to: what `eligd
    /// snapshot position` printed with it, when the position was noted.
    #[arg(long, env = "ELIGD_EPOCH", conflicts_with = "from_postgres")]
    pub epoch: Option<StreamEpoch>,
}

#[derive(Debug, Args)]
pub struct SnapshotInspectArgs {
    /// The snapshot file.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckIdArgs {
    /// The national ID, in any digit script.
    pub national_id: String,
}

/// The longest `--overlap`: 30 days. Clients that need longer to switch keys should be
/// issued a second key instead.
pub const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;

/// Reads `--overlap`: whole seconds, 0 to [`MAX_OVERLAP_SECS`].
pub fn parse_overlap(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) if secs <= MAX_OVERLAP_SECS => Ok(secs),
        Ok(_) => Err(format!(
            "the overlap is at most {MAX_OVERLAP_SECS} seconds (30 days)"
        )),
        Err(_) => Err(format!(
            "the overlap is whole seconds, from 0 to {MAX_OVERLAP_SECS} (30 days)"
        )),
    }
}
