//! `cargo run --release -p rohrpost-bench -- MODE`: rohrpost against a tokio-tungstenite
//! baseline in one run, alternating, with the server pinned to CPU 0 and the load generator
//! to CPU 1. Prints a table and one JSON line.

mod load;
mod process;
mod servers;
mod wire;

use std::time::Duration;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use process::{RedisProcess, ServerProcess};
use servers::Kind;

#[derive(Parser)]
#[command(about = "Benchmarks rohrpost against tokio-tungstenite baselines, in one run")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Round trips: pings on N connections with W in flight each, for D seconds per round;
    /// the echo baseline and rohrpost alternate.
    Rtt {
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Idle connections: open and hold N live connections; the server's resident memory
    /// per connection.
    Conns {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// Fan-out: M subscribers of one todo, K updates from another client; delivery latency
    /// and the server's CPU time per delivery, against the hand-written fan-out baseline.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// Updates not yet delivered to everyone at most.
        #[arg(long, default_value_t = 1)]
        window: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// How the subscribers' reading thread waits when nothing has arrived: `0` sleeps on
        /// the sockets (each push that finds it asleep makes the server's kernel wake it, an
        /// interrupt to the other core that is charged to the server); `N` looks without
        /// waiting and sleeps N µs on a timer instead, so that the server's CPU time is its
        /// own work (arrivals late by up to N µs, for every server alike).
        #[arg(long, default_value_t = 50)]
        receiver_pace_us: u64,
    },
    /// Cross-node fan-out through Redis (subscribers on node B, updates on node A) against
    /// the in-process layer (one node); needs redis-server.
    Redis {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 500)]
        updates: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// A mass reconnection: C subscribers of one todo drop, M updates happen, all come back
    /// at once; with history they are replayed what they missed, without it they refetch
    /// the list (R todos). Time until all are current, and the server's CPU time.
    Resume {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 50)]
        missed: usize,
        #[arg(long, default_value_t = 100)]
        rows: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Groups (and the history) in a Redis of the bench's own; reports the Redis
        /// commands the reconnection cost.
        #[arg(long)]
        redis: bool,
    },
    /// Presence at scale: M members (each its own user) join one todo, alternating between
    /// two nodes over Redis; the same against a group without presence. Memory, Redis
    /// commands per join, and the time until both nodes count every member.
    Presence {
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Runs one server (used by the modes above).
    #[command(hide = true)]
    Serve {
        #[arg(value_enum)]
        kind: Kind,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        redis_url: Option<String>,
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Mode::Serve {
        kind,
        addr,
        redis_url,
        database_url,
    } = cli.mode
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(servers::serve(kind, &addr, redis_url, database_url));
        return;
    }
    let fds = process::raise_fd_limit(300_000);
    process::pin_load_generator();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(async {
        match cli.mode {
            Mode::Rtt {
                connections,
                in_flight,
                seconds,
                rounds,
            } => rtt(connections, in_flight, Duration::from_secs(seconds), rounds).await,
            Mode::Conns { count } => conns(count, fds).await,
            Mode::Fanout {
                subscribers,
                updates,
                window,
                rounds,
                receiver_pace_us,
            } => {
                let pace = (receiver_pace_us > 0).then(|| Duration::from_micros(receiver_pace_us));
                fanout(subscribers, updates, window, rounds, pace).await
            }
            Mode::Redis {
                subscribers,
                updates,
                rounds,
            } => redis(subscribers, updates, rounds).await,
            Mode::Resume {
                clients,
                missed,
                rows,
                rounds,
                redis,
            } => resume(clients, missed, rows, rounds, redis).await,
            Mode::Presence { members, rounds } => presence(members, rounds).await,
            Mode::Serve { .. } => unreachable!("handled above"),
        }
    });
    println!("{report}");
}

async fn presence(members: usize, rounds: usize) -> Value {
    let Some(redis) = RedisProcess::start() else {
        return json!({"mode": "presence", "error": "redis-server could not be started"});
    };
    let mut rows = Vec::new();
    for round in 0..rounds {
        for (label, group) in [
            ("no presence", ("todos", "all")),
            ("presence", ("todo", "1")),
        ] {
            redis.reset();
            let a = ServerProcess::start(Kind::Todo, Some(&redis.url()), None);
            let b = ServerProcess::start(Kind::Todo, Some(&redis.url()), None);
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.reset_counts();
            let (rss_a, rss_b, redis_before) = (a.rss_kib(), b.rss_kib(), redis.used_memory());
            let (cpu_before, own_before) = (a.cpu_time() + b.cpu_time(), process::own_cpu_time());
            let progress = bar(members as u64, &format!("{label} joins"));
            let result = load::join_many(a.addr, b.addr, members, group, &progress).await;
            progress.finish_and_clear();
            let elapsed = result.agreed.unwrap_or(result.joined);
            let generator =
                (process::own_cpu_time() - own_before).as_secs_f64() / elapsed.as_secs_f64();
            let cpu = a.cpu_time() + b.cpu_time() - cpu_before;
            let commands = redis.commands();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let grown = (a.rss_kib() + b.rss_kib()).saturating_sub(rss_a + rss_b);
            let redis_grown = redis.used_memory().saturating_sub(redis_before);
            // The count polls are the bench's own: MULTI, GET, HLEN, EXEC.
            let polls = ["multi", "exec", "get", "hlen"];
            let join_commands: u64 = commands
                .iter()
                .filter(|(name, _)| !polls.contains(&name.as_str()))
                .map(|(_, calls)| calls)
                .sum();
            let scripts: u64 = commands
                .iter()
                .filter(|(name, _)| name.starts_with("eval"))
                .map(|(_, calls)| calls)
                .sum();
            rows.push(json!({
                "round": round, "group": label, "members": members,
                "joined_ms": (result.joined.as_secs_f64() * 1e4).round() / 10.0,
                "counts_agree_ms": result.agreed.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
                "node_kib_per_member": round2(grown as f64 / members as f64),
                "redis_bytes_per_member": round2(redis_grown as f64 / members as f64),
                "redis_commands_per_join": round2(join_commands as f64 / members as f64),
                "script_calls": scripts,
                "script_calls_per_join": round2(scripts as f64 / members as f64),
                "redis_commands_by_name": commands.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "servers_cpu_ms": (cpu.as_secs_f64() * 1e4).round() / 10.0,
                "generator_cpu_share": round2(generator),
            }));
            drop(result.sockets);
        }
    }
    println!("mode presence: {members} members join one todo, alternating between two nodes over Redis; {rounds} rounds");
    println!(
        "{:>6} {:>12} {:>10} {:>16} {:>12} {:>16} {:>14} {:>10} {:>12} {:>10}",
        "round",
        "group",
        "joined ms",
        "counts agree ms",
        "node KiB/m",
        "Redis bytes/m",
        "Redis cmd/join",
        "scripts/join",
        "servers CPU",
        "generator"
    );
    for row in &rows {
        println!(
            "{:>6} {:>12} {:>10} {:>16} {:>12} {:>16} {:>14} {:>10} {:>12} {:>10}",
            row["round"].to_string(),
            row["group"].as_str().unwrap_or(""),
            row["joined_ms"].to_string(),
            row["counts_agree_ms"].to_string(),
            row["node_kib_per_member"].to_string(),
            row["redis_bytes_per_member"].to_string(),
            row["redis_commands_per_join"].to_string(),
            row["script_calls_per_join"].to_string(),
            row["servers_cpu_ms"].to_string(),
            row["generator_cpu_share"].to_string(),
        );
    }
    json!({"mode": "presence", "members": members, "rows": rows})
}

async fn resume(clients: usize, missed: usize, rows: usize, rounds: usize, redis: bool) -> Value {
    let redis = if redis {
        match RedisProcess::start() {
            Some(redis) => Some(redis),
            None => return json!({"mode": "resume", "error": "redis-server could not be started"}),
        }
    } else {
        None
    };
    let mut rows_out = Vec::new();
    let mut time_ratios = Vec::new();
    let mut saturated = false;
    for round in 0..rounds {
        let mut pair = Vec::new();
        for kind in [Kind::TodoWithoutHistory, Kind::Todo] {
            if let Some(redis) = &redis {
                redis.reset();
            }
            let redis_url = redis.as_ref().map(RedisProcess::url);
            let server = ServerProcess::start(kind, redis_url.as_deref(), None);
            let progress = bar(clients as u64, &format!("{kind:?} resumed"));
            let cpu_before = server.cpu_time();
            let result = load::resume(
                server.addr,
                clients,
                missed,
                rows,
                redis.as_ref(),
                &progress,
            )
            .await;
            let cpu = server.cpu_time() - cpu_before;
            let generator = result.generator_cpu.as_secs_f64() / result.elapsed.as_secs_f64();
            saturated |= generator > GENERATOR_LIMIT;
            progress.finish_and_clear();
            pair.push((kind, result, cpu, generator));
        }
        time_ratios.push(pair[1].1.elapsed.as_secs_f64() / pair[0].1.elapsed.as_secs_f64());
        for (kind, result, cpu, generator) in &pair {
            rows_out.push(json!({
                "generator_cpu_share": round2(*generator),
                "round": round, "server": format!("{kind:?}"), "recovered": result.recovered,
                "all_current_ms": (result.elapsed.as_secs_f64() * 1e4).round() / 10.0,
                "current": quantiles(&result.current),
                "server_cpu_ms": (cpu.as_secs_f64() * 1e4).round() / 10.0,
                "redis_commands": result.redis_commands.iter().map(|(_, calls)| calls).sum::<u64>(),
                "redis_commands_by_name": result.redis_commands.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            }));
        }
    }
    let layer = if redis.is_some() {
        "Redis groups"
    } else {
        "in-process groups"
    };
    println!("mode resume: {clients} clients reconnect at once after missing {missed} updates; {rows} todos; {layer}; {rounds} rounds");
    println!(
        "{:>6} {:>19} {:>10} {:>15} {:>12} {:>12} {:>14} {:>14} {:>15}",
        "round",
        "server",
        "recovered",
        "all current ms",
        "p50 us",
        "p99 us",
        "server CPU ms",
        "generator CPU",
        "Redis commands"
    );
    for row in &rows_out {
        println!(
            "{:>6} {:>19} {:>10} {:>15} {:>12} {:>12} {:>14} {:>14} {:>15}",
            row["round"].to_string(),
            row["server"].as_str().unwrap_or(""),
            row["recovered"].to_string(),
            row["all_current_ms"].to_string(),
            row["current"]["p50_us"].to_string(),
            row["current"]["p99_us"].to_string(),
            row["server_cpu_ms"].to_string(),
            row["generator_cpu_share"].to_string(),
            if redis.is_some() {
                row["redis_commands"].to_string()
            } else {
                "-".into()
            }
        );
    }
    warn_if_generator_bound(saturated);
    let summary = json!({"all_current_time_ratio_median": median(&mut time_ratios)});
    println!("with history / without: {summary}");
    json!({"mode": "resume", "clients": clients, "missed": missed, "rows": rows, "rows_out": rows_out, "summary": summary})
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn quantiles(h: &Histogram<u64>) -> Value {
    json!({"p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "p999_us": h.value_at_quantile(0.999)})
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `x` to two decimals, as the tables print it.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A generator busier than this share of its core may be what limits the figures.
pub(crate) const GENERATOR_LIMIT: f64 = 0.85;

/// Says in words that a run's figures measure the load generator, when they do.
fn warn_if_generator_bound(saturated: bool) {
    if saturated {
        println!(
            "the load generator was busier than {:.0}% of its core in some round: these figures are bounded by the generator, and the ratios say little about the servers",
            GENERATOR_LIMIT * 100.0
        );
    }
}

async fn rtt(connections: usize, in_flight: usize, seconds: Duration, rounds: usize) -> Value {
    const KINDS: [Kind; 5] = [
        Kind::EchoBaseline,
        Kind::Rohrpost,
        Kind::SerdePing,
        Kind::SocketioAcks,
        Kind::Jsonrpsee,
    ];
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut serde_ratios = Vec::new();
    let mut p99_ratios = Vec::new();
    let mut p50_deltas = Vec::new();
    let mut saturated = false;
    let mut cpu_ratios = Vec::new();
    let progress = bar((rounds * KINDS.len()) as u64, "rtt rounds");
    for round in 0..rounds {
        let mut runs = Vec::new();
        for kind in KINDS {
            let server = ServerProcess::start(kind, None, None);
            let protocol = match kind {
                Kind::Rohrpost => load::Protocol::Rohrpost,
                Kind::SocketioAcks => load::Protocol::Socketio,
                Kind::Jsonrpsee => load::Protocol::JsonRpc,
                _ => load::Protocol::Plain,
            };
            let (server_cpu, own_cpu) = (server.cpu_time(), process::own_cpu_time());
            let result = load::rtt(server.addr, protocol, connections, in_flight, seconds).await;
            let wall = result.elapsed.as_secs_f64();
            let server_share = (server.cpu_time() - server_cpu).as_secs_f64() / wall;
            let generator_share = (process::own_cpu_time() - own_cpu).as_secs_f64() / wall;
            progress.inc(1);
            runs.push((kind, result, server_share, generator_share));
        }
        let (base, ours, serde) = (&runs[0].1, &runs[1].1, &runs[2].1);
        saturated |= runs
            .iter()
            .any(|(_, _, _, generator)| *generator > GENERATOR_LIMIT);
        let cpu_per_message = |(_, result, share, _): &(Kind, load::RttResult, f64, f64)| {
            share * 1e6 / result.per_second()
        };
        cpu_ratios.push(cpu_per_message(&runs[1]) / cpu_per_message(&runs[0]));
        ratios.push(ours.per_second() / base.per_second());
        serde_ratios.push(serde.per_second() / base.per_second());
        p99_ratios.push(
            ours.latency.value_at_quantile(0.99) as f64
                / base.latency.value_at_quantile(0.99) as f64,
        );
        p50_deltas.push(
            ours.latency.value_at_quantile(0.5) as f64 - base.latency.value_at_quantile(0.5) as f64,
        );
        for (kind, result, server_share, generator_share) in &runs {
            rows.push(json!({
                "round": round, "server": format!("{kind:?}"), "msgs_per_s": result.per_second().round(),
                "x_echo": round2(result.per_second() / base.per_second()),
                "latency": quantiles(&result.latency),
                "server_cpu_share": round2(*server_share),
                "server_cpu_us_per_msg": (server_share * 1e8 / result.per_second()).round() / 100.0,
                "generator_cpu_share": round2(*generator_share),
            }));
        }
    }
    progress.finish_and_clear();
    println!("mode rtt: {connections} connections x {in_flight} in flight, {}s per round, {rounds} rounds", seconds.as_secs());
    println!(
        "{:>6} {:>14} {:>12} {:>7} {:>9} {:>9} {:>9} {:>11} {:>13} {:>14}",
        "round",
        "server",
        "msgs/s",
        "x echo",
        "p50 us",
        "p99 us",
        "p999 us",
        "server CPU",
        "CPU us/msg",
        "generator CPU"
    );
    // Server CPU per message holds even when the generator bounds the rate.
    for row in &rows {
        println!(
            "{:>6} {:>14} {:>12} {:>7} {:>9} {:>9} {:>9} {:>11} {:>13} {:>14}",
            row["round"].to_string(),
            row["server"].as_str().unwrap_or(""),
            row["msgs_per_s"].to_string(),
            row["x_echo"].to_string(),
            row["latency"]["p50_us"].to_string(),
            row["latency"]["p99_us"].to_string(),
            row["latency"]["p999_us"].to_string(),
            row["server_cpu_share"].to_string(),
            row["server_cpu_us_per_msg"].to_string(),
            row["generator_cpu_share"].to_string()
        );
    }
    warn_if_generator_bound(saturated);
    let summary = json!({
        "throughput_ratio_mean": ratios.iter().sum::<f64>() / ratios.len().max(1) as f64,
        "throughput_ratio_median": median(&mut ratios.clone()),
        "serde_ping_throughput_ratio_median": median(&mut serde_ratios),
        "p99_ratio_median": median(&mut p99_ratios),
        "p50_delta_us_median": median(&mut p50_deltas),
        "server_cpu_per_msg_ratio_median": median(&mut cpu_ratios),
    });
    println!("rohrpost / baseline: {summary}");
    json!({"mode": "rtt", "connections": connections, "in_flight": in_flight, "generator_bound": saturated, "rows": rows, "summary": summary})
}

async fn conns(count: usize, fds: u64) -> Value {
    let mut rows = Vec::new();
    for kind in [Kind::EchoBaseline, Kind::Rohrpost] {
        let server = ServerProcess::start(kind, None, None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = server.rss_kib();
        let progress = bar(count as u64, &format!("{kind:?} connections"));
        let path = if kind == Kind::Rohrpost {
            "/rohrpost/"
        } else {
            "/"
        };
        let sockets = load::open_idle(server.addr, path, count, &progress).await;
        progress.finish_and_clear();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = server.rss_kib();
        let per_connection = (after.saturating_sub(before)) as f64 / count as f64;
        rows.push(json!({"server": format!("{kind:?}"), "connections": sockets.len(), "rss_before_kib": before, "rss_after_kib": after, "kib_per_connection": round2(per_connection)}));
        drop(sockets);
    }
    println!("mode conns: {count} idle connections (open-file limit {fds})");
    println!(
        "{:>14} {:>12} {:>12} {:>12} {:>10}",
        "server", "connections", "rss before", "rss after", "KiB/conn"
    );
    for row in &rows {
        println!(
            "{:>14} {:>12} {:>12} {:>12} {:>10}",
            row["server"].as_str().unwrap_or(""),
            row["connections"].to_string(),
            row["rss_before_kib"].to_string(),
            row["rss_after_kib"].to_string(),
            row["kib_per_connection"].to_string()
        );
    }
    json!({"mode": "conns", "count": count, "rows": rows})
}

/// `count` events over `deliveries`, to three decimals.
fn per_delivery(count: u64, deliveries: u64) -> f64 {
    (count as f64 / deliveries.max(1) as f64 * 1000.0).round() / 1000.0
}

async fn fanout(
    subscribers: usize,
    updates: usize,
    window: usize,
    rounds: usize,
    pace: Option<Duration>,
) -> Value {
    let mut saturated = false;
    let mut rows = Vec::new();
    // Against the baseline: rohrpost's groups doing the same work, then the todo demo
    // (SQLite, history, conflation around each push).
    let compared = [Kind::RohrpostGroups, Kind::Todo];
    let mut cpu_ratios = vec![Vec::new(); compared.len()];
    let mut p99_ratios = vec![Vec::new(); compared.len()];
    for round in 0..rounds {
        let mut pair = Vec::new();
        for kind in std::iter::once(Kind::FanoutBaseline).chain(compared) {
            let server = ServerProcess::start(kind, None, None);
            let progress = bar(updates as u64, &format!("{kind:?} updates"));
            let result = load::fanout(
                server.addr,
                server.addr,
                load::FanoutShape {
                    subscribers,
                    updates,
                    window,
                    pace,
                },
                &progress,
                &|| (server.cpu_time(), server.user_time(), server.sleeps()),
            )
            .await;
            // Both over the updates only: the subscribers' handshakes are not deliveries.
            let cpu = result.server_cpu;
            let generator = result.generator_share();
            progress.finish_and_clear();
            let cpu_per_delivery_us = cpu.as_secs_f64() * 1e6 / result.deliveries.max(1) as f64;
            let user_per_delivery_us =
                result.server_user.as_secs_f64() * 1e6 / result.deliveries.max(1) as f64;
            saturated |= generator > GENERATOR_LIMIT;
            pair.push((
                kind,
                result,
                cpu_per_delivery_us,
                user_per_delivery_us,
                generator,
            ));
        }
        let baseline_p99 = pair[0].1.complete.value_at_quantile(0.99) as f64;
        for (n, (_, result, cpu, ..)) in pair[1..].iter().enumerate() {
            cpu_ratios[n].push(cpu / pair[0].2);
            p99_ratios[n].push(result.complete.value_at_quantile(0.99) as f64 / baseline_p99);
        }
        for (kind, result, cpu, user, generator) in &pair {
            rows.push(json!({
                "round": round, "server": format!("{kind:?}"), "deliveries": result.deliveries,
                "generator_cpu_share": round2(*generator),
                "deliveries_per_s": (result.deliveries as f64 / result.elapsed.as_secs_f64()).round(),
                "cpu_us_per_delivery": round2(*cpu),
                "user_us_per_delivery": round2(*user),
                "server_sleeps_per_delivery": per_delivery(result.server_sleeps, result.deliveries),
                "generator_sleeps_per_delivery": per_delivery(result.generator_sleeps, result.deliveries),
                "delivery": quantiles(&result.delivery), "all_subscribers": quantiles(&result.complete),
            }));
        }
    }
    let waits = match pace {
        Some(pace) => format!("receiver looks every {} µs", pace.as_micros()),
        None => "receiver sleeps on the sockets".to_owned(),
    };
    println!("mode fanout: {subscribers} subscribers, {updates} updates, window {window}, {rounds} rounds, {waits}");
    println!(
        "{:>6} {:>15} {:>11} {:>13} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "round",
        "server",
        "deliveries",
        "deliveries/s",
        "CPU us/deliv",
        "user us/deliv",
        "all p50 us",
        "all p99 us",
        "generator CPU",
        "srv sleep/dlv",
        "gen sleep/dlv"
    );
    for row in &rows {
        println!(
            "{:>6} {:>15} {:>11} {:>13} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14}",
            row["round"].to_string(),
            row["server"].as_str().unwrap_or(""),
            row["deliveries"].to_string(),
            row["deliveries_per_s"].to_string(),
            row["cpu_us_per_delivery"].to_string(),
            row["user_us_per_delivery"].to_string(),
            row["all_subscribers"]["p50_us"].to_string(),
            row["all_subscribers"]["p99_us"].to_string(),
            row["generator_cpu_share"].to_string(),
            row["server_sleeps_per_delivery"].to_string(),
            row["generator_sleeps_per_delivery"].to_string()
        );
    }
    warn_if_generator_bound(saturated);
    let mut summary = serde_json::Map::new();
    for (n, kind) in compared.iter().enumerate() {
        let ratios = json!({"cpu_per_delivery_ratio_median": median(&mut cpu_ratios[n]), "all_subscribers_p99_ratio_median": median(&mut p99_ratios[n])});
        println!("{kind:?} / FanoutBaseline: {ratios}");
        summary.insert(format!("{kind:?}"), ratios);
    }
    json!({"mode": "fanout", "subscribers": subscribers, "updates": updates, "receiver_pace_us": pace.map(|pace| pace.as_micros() as u64), "rows": rows, "summary": summary})
}

async fn redis(subscribers: usize, updates: usize, rounds: usize) -> Value {
    let Some(redis) = RedisProcess::start() else {
        return json!({"mode": "redis", "error": "redis-server could not be started"});
    };
    let mut rows = Vec::new();
    let mut p50_ratios = Vec::new();
    let mut p99_ratios = Vec::new();
    let mut saturated = false;
    let directory = tempfile::tempdir().expect("temporary directory");
    let shape = load::FanoutShape {
        subscribers,
        updates,
        window: 1,
        pace: None,
    };
    for round in 0..rounds {
        let mut pair = Vec::new();
        for cross_node in [false, true] {
            // A fresh database each run, shared by both nodes of the cross-node setup.
            let database = format!(
                "sqlite://{}?mode=rwc",
                directory
                    .path()
                    .join(format!("r{round}{cross_node}.sqlite"))
                    .display()
            );
            let progress = bar(
                updates as u64,
                if cross_node {
                    "cross-node updates"
                } else {
                    "in-process updates"
                },
            );
            let result = if cross_node {
                let a = ServerProcess::start(Kind::Todo, Some(&redis.url()), Some(&database));
                let b = ServerProcess::start(Kind::Todo, Some(&redis.url()), Some(&database));
                let cpu = || {
                    (
                        a.cpu_time() + b.cpu_time(),
                        a.user_time() + b.user_time(),
                        a.sleeps() + b.sleeps(),
                    )
                };
                load::fanout(b.addr, a.addr, shape, &progress, &cpu).await
            } else {
                let node = ServerProcess::start(Kind::Todo, None, Some(&database));
                load::fanout(node.addr, node.addr, shape, &progress, &|| {
                    (node.cpu_time(), node.user_time(), node.sleeps())
                })
                .await
            };
            progress.finish_and_clear();
            pair.push((cross_node, result));
        }
        p50_ratios.push(
            pair[1].1.delivery.value_at_quantile(0.5) as f64
                / pair[0].1.delivery.value_at_quantile(0.5) as f64,
        );
        p99_ratios.push(
            pair[1].1.delivery.value_at_quantile(0.99) as f64
                / pair[0].1.delivery.value_at_quantile(0.99) as f64,
        );
        for (cross_node, result) in &pair {
            let generator = result.generator_share();
            saturated |= generator > GENERATOR_LIMIT;
            rows.push(json!({"round": round, "layer": if *cross_node { "redis, 2 nodes" } else { "in-process" }, "deliveries": result.deliveries, "delivery": quantiles(&result.delivery), "generator_cpu_share": round2(generator)}));
        }
    }
    println!("mode redis: {subscribers} subscribers, {updates} updates, {rounds} rounds");
    println!(
        "{:>6} {:>16} {:>11} {:>10} {:>10} {:>14}",
        "round", "layer", "deliveries", "p50 us", "p99 us", "generator CPU"
    );
    for row in &rows {
        println!(
            "{:>6} {:>16} {:>11} {:>10} {:>10} {:>14}",
            row["round"].to_string(),
            row["layer"].as_str().unwrap_or(""),
            row["deliveries"].to_string(),
            row["delivery"]["p50_us"].to_string(),
            row["delivery"]["p99_us"].to_string(),
            row["generator_cpu_share"].to_string()
        );
    }
    let summary = json!({"p50_ratio_median": median(&mut p50_ratios), "p99_ratio_median": median(&mut p99_ratios)});
    println!("redis / in-process: {summary}");
    warn_if_generator_bound(saturated);
    json!({"mode": "redis", "subscribers": subscribers, "updates": updates, "generator_bound": saturated, "rows": rows, "summary": summary})
}
