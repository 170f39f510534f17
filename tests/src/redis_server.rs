//! A `redis-server` of the test's own, on a free port, so that runs never share data.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Prints why a test is skipped; with `ROHRPOST_REQUIRE_REDIS=1` (as in CI) fails instead.
fn skip_unless_required(reason: &str) {
    if std::env::var("ROHRPOST_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("{reason}, and ROHRPOST_REQUIRE_REDIS=1");
    }
    eprintln!("skipped: {reason}");
}

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or returns `None` (after printing why) when `redis-server` is not
    /// installed. With `ROHRPOST_REQUIRE_REDIS=1` (as in CI) a missing binary fails instead.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            skip_unless_required("redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = free_port();
        let mut server = Self { port, child: None };
        server.launch();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A Redis group layer on this server, with the default channel prefix and `timeout`
    /// for each Redis call.
    pub async fn groups(&self, timeout: Duration) -> rohrpost::groups::RedisGroups {
        rohrpost::groups::RedisGroups::connect_with(
            &self.url(),
            rohrpost::groups::DEFAULT_CHANNEL_PREFIX,
            timeout,
        )
        .await
        .expect("Redis reachable")
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `CLIENT PAUSE ms WRITE`: for `pause`, or until [`unpause`](Self::unpause), Redis
    /// holds back every command that writes (scripts included) and answers the rest.
    /// `false`, with the reason printed, when this Redis is older than 6.2 (no `WRITE` mode);
    /// with `ROHRPOST_REQUIRE_REDIS=1` that fails instead.
    pub async fn pause_writes(&self, pause: Duration) -> bool {
        let mut connection = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await
            .expect("INFO server");
        let version: Vec<u32> = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or_default()
            .trim()
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect();
        if version.as_slice() < [6, 2].as_slice() {
            skip_unless_required(&format!(
                "CLIENT PAUSE WRITE needs Redis 6.2 or later, this is {version:?}"
            ));
            return false;
        }
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(pause.as_millis() as u64)
            .arg("WRITE")
            .query_async::<()>(&mut connection)
            .await
            .expect("CLIENT PAUSE");
        true
    }

    /// `CLIENT UNPAUSE`: ends a [`pause_writes`](Self::pause_writes).
    pub async fn unpause(&self) {
        let mut connection = self.connection().await;
        redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async::<()>(&mut connection)
            .await
            .expect("CLIENT UNPAUSE");
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).expect("valid URL");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    /// `PUBSUB NUMSUB channel`: how many connections are subscribed to `channel`.
    pub async fn subscribers(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).expect("valid URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis");
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
